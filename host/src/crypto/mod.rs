//! Identity: Ed25519 keys, `trac1…` addresses, domain-separated hashing and signing, batch
//! verification and the keystore file.
//!
//! ```
//! use trac_host::crypto::{Domain, DomainKind, Hash32, Keypair};
//!
//! let keypair = Keypair::from_seed(&[7u8; 32]);
//! let domain = Domain::new(DomainKind::SubnetOp, Hash32([1u8; 32]));
//! let signature = keypair.sign(&domain, b"payload");
//! assert!(keypair.public().verify(&domain, b"payload", &signature).is_ok());
//! // The same signature is worthless in any other domain.
//! let other = Domain::new(DomainKind::SubnetOp, Hash32([2u8; 32]));
//! assert!(keypair.public().verify(&other, b"payload", &signature).is_err());
//! ```

mod address;
mod cache;
mod domain;
mod hash;
mod keys;
pub mod keystore;
mod verify;

pub use address::{ADDRESS_HRP, ADDRESS_LEN, AddressError, decode_address, encode_address};
pub use cache::VerifiedSignatures;
pub use domain::{DOMAIN_PREFIX, Domain, DomainKind};
pub use hash::{Hash32, HexError, hash, hash_parts, parse_fixed_hex};
pub use keys::{Keypair, PublicKey, Signature};
pub use verify::{
    BatchItem, SignatureError, SignedHash, verify_batch, verify_hash, verify_message,
};
