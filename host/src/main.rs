//! The `trac` binary: see `trac --help`.

fn main() -> std::process::ExitCode {
    trac_host::cli::main()
}
