//! The host side of the contract world: the per-call state every import works on, and the
//! imports themselves, each charging fuel from the [`PriceTable`] before it does any work.

use std::ptr::NonNull;
use std::sync::Arc;

use wasmtime::component::Linker;
use wasmtime::{ResourceLimiter, StoreContextMut};

use super::bindings::trac::contract::types::{Entry, StateError};
use super::limits::{Limits, PriceTable};
use super::{CallContext, Event, ReservedKeys, StateView, StateWrite};
use crate::crypto::{PublicKey, Signature, hash};
use crate::store::Diff;

/// What an entry point may do with state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// `describe`, `commands`, `map-command`: no state at all.
    None,
    /// Queries and terminal commands.
    ReadOnly,
    /// `execute`, `init`, `migrate`.
    ReadWrite,
}

/// Why the host ended a call. Carried through wasmtime as the call's error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HostTrap {
    /// A host charge exceeded the remaining fuel.
    #[error("out of fuel")]
    OutOfFuel,
    /// The contract called `events.abort` (its panic hook).
    #[error("contract aborted: {0}")]
    Abort(String),
    /// Memory growth beyond the limit.
    #[error("memory limit of {0} bytes exceeded")]
    MemoryLimit(u64),
    /// Table growth beyond the limit.
    #[error("table limit of {0} elements exceeded")]
    TableLimit(u32),
    /// Reading the node's state failed: a node error, not a contract failure.
    #[error("state read failed: {0}")]
    Node(String),
}

/// The state view of one call, borrowed for the duration of the call only.
///
/// wasmtime stores need `'static` data, but a call reads a view that borrows an LMDB
/// transaction. The pointer is created in `Runtime::run` from a reference that outlives the
/// store, and the store (with every copy of this pointer) is dropped before `run` returns.
#[derive(Clone, Copy)]
pub(crate) struct BorrowedView(NonNull<dyn StateView + 'static>);

// SAFETY: the store holding the pointer never leaves the thread that created it while the
// view is borrowed (calls are synchronous); see the type's documentation.
unsafe impl Send for BorrowedView {}
unsafe impl Sync for BorrowedView {}

impl BorrowedView {
    /// # Safety
    /// `view` must outlive every use of the returned value.
    pub(crate) unsafe fn new(view: &dyn StateView) -> Self {
        // SAFETY: only the lifetime is erased; the caller guarantees it.
        let view: &'static dyn StateView = unsafe { std::mem::transmute(view) };
        BorrowedView(NonNull::from(view))
    }

    fn get(&self) -> &dyn StateView {
        // SAFETY: see the type's documentation.
        unsafe { self.0.as_ref() }
    }
}

/// Enforces memory, table and instance limits; growth past a limit traps deterministically.
pub(crate) struct CallLimiter {
    pub max_memory: u64,
    pub max_table: u32,
    pub max_instances: u32,
}

impl ResourceLimiter for CallLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.max_memory {
            return Err(wasmtime::Error::new(HostTrap::MemoryLimit(self.max_memory)));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > u64::from(self.max_table) {
            return Err(wasmtime::Error::new(HostTrap::TableLimit(self.max_table)));
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        self.max_instances as usize
    }

    fn tables(&self) -> usize {
        self.max_instances as usize * 4
    }

    fn memories(&self) -> usize {
        self.max_instances as usize
    }
}

/// Everything one call's imports work on.
pub(crate) struct CallState {
    pub view: BorrowedView,
    pub access: Access,
    pub context: CallContext,
    pub limits: Limits,
    pub prices: PriceTable,
    pub reserved: Arc<ReservedKeys>,
    /// The call's own writes over the view: `None` is a delete.
    pub overlay: Diff,
    pub write_bytes: u64,
    pub events: Vec<Event>,
    pub event_bytes: u64,
    pub debug: Vec<String>,
    pub limiter: CallLimiter,
}

impl CallState {
    /// The call's writes, in key order.
    pub fn writes(&self) -> Vec<StateWrite> {
        self.overlay
            .iter()
            .map(|(key, value)| StateWrite {
                key: key.clone(),
                value: value.clone(),
            })
            .collect()
    }

    fn read(&self, key: &[u8]) -> Result<Option<Vec<u8>>, HostTrap> {
        if let Some(value) = self.overlay.get(key) {
            return Ok(value.clone());
        }
        self.view
            .get()
            .get(key)
            .map_err(|e| HostTrap::Node(e.to_string()))
    }

    fn check_key(&self, key: &[u8]) -> Result<(), StateError> {
        if key.is_empty() || key.len() > self.limits.max_key_len as usize {
            return Err(StateError::KeySize(self.limits.max_key_len));
        }
        Ok(())
    }

    fn check_write(&self, key: &[u8], value_len: usize) -> Result<(), StateError> {
        match self.access {
            Access::None => return Err(StateError::NoAccess),
            Access::ReadOnly => return Err(StateError::ReadOnly),
            Access::ReadWrite => {}
        }
        self.check_key(key)?;
        if value_len > self.limits.max_value_len as usize {
            return Err(StateError::ValueSize(self.limits.max_value_len));
        }
        if self.reserved.contains(key) {
            return Err(StateError::ReservedKey);
        }
        let new_key = !self.overlay.contains_key(key);
        if new_key && self.overlay.len() >= self.limits.max_writes_per_call as usize {
            return Err(StateError::WriteLimit);
        }
        if self.write_bytes + (key.len() + value_len) as u64 > self.limits.max_write_bytes_per_call
        {
            return Err(StateError::WriteLimit);
        }
        Ok(())
    }

    /// Records within `[start, end)` as the call sees them (its writes over the view).
    fn scan(&self, start: &[u8], end: Option<&[u8]>, limit: usize) -> Result<Vec<Entry>, HostTrap> {
        Ok(
            crate::store::range_through(self.view.get(), &self.overlay, start, end, limit)
                .map_err(|e| HostTrap::Node(e.to_string()))?
                .into_iter()
                .map(|(key, value)| Entry { key, value })
                .collect(),
        )
    }
}

/// Takes `amount` fuel from the store, trapping with [`HostTrap::OutOfFuel`] when there is not
/// enough.
pub(crate) fn charge(
    store: &mut StoreContextMut<'_, CallState>,
    amount: u64,
) -> wasmtime::Result<()> {
    let fuel = store.get_fuel()?;
    if fuel < amount {
        store.set_fuel(0)?;
        return Err(wasmtime::Error::new(HostTrap::OutOfFuel));
    }
    store.set_fuel(fuel - amount)
}

fn len(bytes: &[u8]) -> u64 {
    bytes.len() as u64
}

/// Defines every import of the contract world in `linker`.
pub(crate) fn add_imports(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    let mut state = linker.instance("trac:contract/state@0.1.0")?;
    state.func_wrap(
        "get",
        |mut store: StoreContextMut<'_, CallState>, (key,): (Vec<u8>,)| {
            let prices = store.data().prices;
            charge(&mut store, prices.host_call + prices.read_byte * len(&key))?;
            let data = store.data();
            if data.access == Access::None {
                return Ok((Err(StateError::NoAccess),));
            }
            if let Err(e) = data.check_key(&key) {
                return Ok((Err(e),));
            }
            let value = data.read(&key).map_err(wasmtime::Error::new)?;
            let read = value.as_deref().map_or(0, len);
            charge(&mut store, prices.read_byte * read)?;
            Ok((Ok(value),))
        },
    )?;
    state.func_wrap(
        "put",
        |mut store: StoreContextMut<'_, CallState>, (key, value): (Vec<u8>, Vec<u8>)| {
            let prices = store.data().prices;
            charge(
                &mut store,
                prices.host_call + prices.write_byte * (len(&key) + len(&value)),
            )?;
            let data = store.data_mut();
            if let Err(e) = data.check_write(&key, value.len()) {
                return Ok((Err(e),));
            }
            data.write_bytes += len(&key) + len(&value);
            data.overlay.insert(key, Some(value));
            Ok((Ok(()),))
        },
    )?;
    state.func_wrap(
        "delete",
        |mut store: StoreContextMut<'_, CallState>, (key,): (Vec<u8>,)| {
            let prices = store.data().prices;
            charge(&mut store, prices.host_call + prices.write_byte * len(&key))?;
            let data = store.data_mut();
            if let Err(e) = data.check_write(&key, 0) {
                return Ok((Err(e),));
            }
            data.write_bytes += len(&key);
            data.overlay.insert(key, None);
            Ok((Ok(()),))
        },
    )?;
    state.func_wrap(
        "scan",
        |mut store: StoreContextMut<'_, CallState>,
         (start, end, limit): (Vec<u8>, Option<Vec<u8>>, u32)| {
            let prices = store.data().prices;
            charge(&mut store, prices.host_call)?;
            let data = store.data();
            if data.access == Access::None {
                return Ok((Err(StateError::NoAccess),));
            }
            let limit = limit.min(data.limits.max_scan_limit) as usize;
            let entries = data
                .scan(&start, end.as_deref(), limit)
                .map_err(wasmtime::Error::new)?;
            let bytes: u64 = entries.iter().map(|e| len(&e.key) + len(&e.value)).sum();
            charge(
                &mut store,
                prices.scan_record * entries.len() as u64 + prices.read_byte * bytes,
            )?;
            Ok((Ok(entries),))
        },
    )?;

    let mut context = linker.instance("trac:contract/context@0.1.0")?;
    context.func_wrap(
        "current",
        |mut store: StoreContextMut<'_, CallState>, (): ()| {
            let prices = store.data().prices;
            charge(&mut store, prices.host_call)?;
            Ok((store.data().context.to_wit(),))
        },
    )?;

    let mut events = linker.instance("trac:contract/events@0.1.0")?;
    events.func_wrap(
        "emit",
        |mut store: StoreContextMut<'_, CallState>, (topic, data): (String, Vec<u8>)| {
            let prices = store.data().prices;
            let size = len(topic.as_bytes()) + len(&data);
            charge(&mut store, prices.host_call + prices.event_byte * size)?;
            let state = store.data_mut();
            if state.access != Access::ReadWrite {
                return Ok((Err(
                    "events can only be emitted by execute, init and migrate".to_string(),
                ),));
            }
            if state.events.len() >= state.limits.max_events_per_call as usize {
                return Ok((Err(format!(
                    "event limit of {} per call reached",
                    state.limits.max_events_per_call
                )),));
            }
            if state.event_bytes + size > u64::from(state.limits.max_event_bytes_per_call) {
                return Ok((Err(format!(
                    "event size limit of {} bytes per call reached",
                    state.limits.max_event_bytes_per_call
                )),));
            }
            state.event_bytes += size;
            state.events.push(Event { topic, data });
            Ok((Ok(()),))
        },
    )?;
    events.func_wrap(
        "debug",
        |mut store: StoreContextMut<'_, CallState>, (message,): (String,)| {
            let prices = store.data().prices;
            charge(
                &mut store,
                prices.host_call + prices.event_byte * len(message.as_bytes()),
            )?;
            let state = store.data_mut();
            // Keep a bounded amount of (non-consensus) debug output.
            if state.debug.len() < 256 {
                let mut message = message;
                message.truncate(
                    (0..=4096.min(message.len()))
                        .rev()
                        .find(|&i| message.is_char_boundary(i))
                        .unwrap_or(0),
                );
                tracing::debug!(target: "contract", "{message}");
                state.debug.push(message);
            }
            Ok(())
        },
    )?;
    events.func_wrap(
        "abort",
        |mut store: StoreContextMut<'_, CallState>,
         (message,): (String,)|
         -> wasmtime::Result<()> {
            let prices = store.data().prices;
            charge(
                &mut store,
                prices.host_call + prices.event_byte * len(message.as_bytes()),
            )?;
            let max = store.data().limits.max_result_bytes as usize;
            let mut message = message;
            if message.len() > max {
                let cut = (0..=max)
                    .rev()
                    .find(|&i| message.is_char_boundary(i))
                    .unwrap_or(0);
                message.truncate(cut);
            }
            Err(wasmtime::Error::new(HostTrap::Abort(message)))
        },
    )?;

    let mut crypto = linker.instance("trac:contract/crypto@0.1.0")?;
    crypto.func_wrap(
        "blake3",
        |mut store: StoreContextMut<'_, CallState>, (data,): (Vec<u8>,)| {
            let prices = store.data().prices;
            charge(&mut store, prices.host_call + prices.hash_byte * len(&data))?;
            Ok((hash(&data).0.to_vec(),))
        },
    )?;
    crypto.func_wrap(
        "ed25519-verify",
        |mut store: StoreContextMut<'_, CallState>,
         (key, message, signature): (Vec<u8>, Vec<u8>, Vec<u8>)| {
            let prices = store.data().prices;
            charge(
                &mut store,
                prices.host_call + prices.signature_verify + prices.hash_byte * len(&message),
            )?;
            let (Ok(key), Ok(signature)) = (
                <[u8; 32]>::try_from(key.as_slice()),
                <[u8; 64]>::try_from(signature.as_slice()),
            ) else {
                return Ok((false,));
            };
            let valid =
                crate::crypto::verify_message(&PublicKey(key), &message, &Signature(signature))
                    .is_ok();
            Ok((valid,))
        },
    )?;
    Ok(())
}
