//! The SDK conformance probe: a contract whose functions exercise the guest SDK and the
//! runtime's limits from real Rust code, for the host's tests. Not an app.

use serde::{Deserialize, Serialize};
use trac_sdk::prelude::*;

/// The probe.
pub struct Probe;

/// Arguments carrying a message.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Text {
    /// The message.
    pub message: String,
}
impl Args for Text {}

/// Arguments carrying a count.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Count {
    /// How many.
    pub n: u64,
}
impl Args for Count {}

/// A nested value.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Inner {
    /// A name.
    pub name: String,
}

/// Arguments with nested objects, lists and options.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Nested {
    /// An object.
    pub inner: Inner,
    /// A list of objects.
    pub list: Vec<Inner>,
    /// An optional object.
    pub maybe: Option<Inner>,
}
impl Args for Nested {}

/// The call context as the contract sees it.
#[derive(Debug, Serialize)]
pub struct Seen {
    op_kind: String,
    sender: String,
    sender_address: String,
    tx_hash: String,
    validator: Option<String>,
    position: u64,
    time: u64,
    seed: String,
}

fn recurse(depth: u64) -> u64 {
    if depth == 0 {
        return 0;
    }
    // Keep the frame alive so the recursion is real.
    1 + std::hint::black_box(recurse(depth - 1))
}

impl Contract for Probe {
    const NAME: &'static str = "probe";
    const VERSION: &'static str = "0.1.0";

    fn register(r: &mut Registry) {
        r.tx("panic", "Panics with the message", |_ctx, a: Text| -> Result<(), Error> {
            panic!("{}", a.message)
        });
        r.both("context", "Shows the call context", |ctx, (): ()| {
            Ok(Seen {
                op_kind: format!("{:?}", ctx.op_kind()),
                sender: ctx.sender_hex(),
                sender_address: ctx.sender_address(),
                tx_hash: trac_sdk::hex(&ctx.tx_hash()),
                validator: ctx.validator().map(|v| trac_sdk::hex(&v)),
                position: ctx.log_position(),
                time: ctx.time(),
                seed: trac_sdk::hex(&ctx.seed()),
            })
        });
        r.tx("roll", "Rolls an n-sided die from the call's seed", |ctx, a: Count| {
            if a.n == 0 {
                return Err(Error::invalid_args("n must be at least 1"));
            }
            let seed = ctx.seed();
            let value = u64::from_le_bytes(seed[..8].try_into().expect("8 bytes")) % a.n + 1;
            ctx.put(format!("roll/{}", ctx.log_position()), &value)?;
            Ok(value)
        });
        r.tx("fill", "Writes n keys", |ctx, a: Count| {
            for i in 0..a.n {
                ctx.put(format!("fill/{i}"), &i)?;
            }
            Ok(a.n)
        });
        r.query("recurse", "Recurses n levels deep", |_ctx, a: Count| Ok(recurse(a.n)));
        r.query("echo", "Returns its (nested) arguments", |_ctx, a: Nested| Ok(a));
        r.query("alloc", "Allocates n MiB", |_ctx, a: Count| {
            let buffer = vec![1u8; (a.n as usize) << 20];
            Ok(std::hint::black_box(buffer).len() as u64)
        });
    }
}

trac_sdk::export_contract!(Probe);
