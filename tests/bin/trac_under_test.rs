//! The `trac` command line built inside the test package, so integration tests can run it as a
//! real process (`CARGO_BIN_EXE_trac-under-test`); it is the same entry point as `trac`.

fn main() -> std::process::ExitCode {
    trac_host::cli::main()
}
