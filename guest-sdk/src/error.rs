//! Contract errors: what a function returns instead of panicking.

use std::fmt;

use crate::bindings::trac::contract::types::{ContractError, StateError};

/// Why a contract call failed. Recorded with the transaction; its writes are rolled back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The call's arguments are not acceptable.
    InvalidArgs(String),
    /// The contract refuses the call.
    Failed(String),
}

impl Error {
    /// A refusal with a message.
    pub fn failed(message: impl Into<String>) -> Self {
        Error::Failed(message.into())
    }

    /// Invalid arguments with a message.
    pub fn invalid_args(message: impl Into<String>) -> Self {
        Error::InvalidArgs(message.into())
    }

    pub(crate) fn into_wit(self) -> ContractError {
        match self {
            Error::InvalidArgs(m) => ContractError::InvalidArgs(m),
            Error::Failed(m) => ContractError::Failed(m),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidArgs(m) => write!(f, "invalid arguments: {m}"),
            Error::Failed(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

impl From<String> for Error {
    fn from(message: String) -> Self {
        Error::Failed(message)
    }
}

impl From<&str> for Error {
    fn from(message: &str) -> Self {
        Error::Failed(message.to_string())
    }
}

impl From<StateError> for Error {
    fn from(e: StateError) -> Self {
        Error::Failed(match e {
            StateError::KeySize(max) => format!("state: key must be 1 to {max} bytes"),
            StateError::ValueSize(max) => format!("state: value must be at most {max} bytes"),
            StateError::ReservedKey => "state: the key is reserved for the system".to_string(),
            StateError::ReadOnly => "state: this call may not write".to_string(),
            StateError::NoAccess => "state: not available in this entry point".to_string(),
            StateError::WriteLimit => "state: the call's write limit is reached".to_string(),
        })
    }
}

/// Checks that a text field is `min..=max` characters long (for [`crate::Args::validate`]).
pub fn check_len(field: &str, value: &str, min: usize, max: usize) -> Result<(), String> {
    let len = value.chars().count();
    if len < min || len > max {
        return Err(format!(
            "{field} must be {min} to {max} characters long, got {len}"
        ));
    }
    Ok(())
}
