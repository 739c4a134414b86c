//! Service calls between nodes: requests a node cannot serve from its own replicas, carried by
//! call frames ([`crate::net::NetHandle::call`]) on the network of the ledger concerned.
//!
//! - On an MSB network, [`ServiceRequest::Submit`]: a user op (signed by its requester) for the
//!   callee's MSB validator to co-sign and append. A node that is not a validator answers
//!   [`Rejection::NotValidator`] and the caller tries its next peer; the validator's answer is
//!   its typed [`Rejection`] or the tx hash.
//! - On a subnet, [`ServiceRequest::AutoAddWriter`]: an `autoAddWriter` op signed by the
//!   caller's own peer key, which a writer appends to its log while the subnet's auto-add is on
//!   (the subnet rules decide again when the op applies; the writer only lends its log).
//!
//! Everything a caller sends is checked before any work: the op must decode, be of the
//! expected kind, be signed by the caller's key (the connection's identity) and verify.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::codec;
use crate::crypto::{Hash32, PublicKey};
use crate::msb::{PartialOp, Rejection};
use crate::subnet::{Action, SubnetOp, decode_op};

/// What a node asks of a peer's node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceRequest {
    /// Co-sign and append this user op (the callee's MSB validator).
    Submit(PartialOp),
    /// Append this encoded subnet op, an `autoAddWriter` signed by the caller.
    AutoAddWriter(ByteBuf),
}

/// A node's answer to a [`ServiceRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceAnswer {
    /// The validator accepted the op: its tx hash.
    Submitted(Hash32),
    /// The validator refused the op.
    Rejected(Rejection),
    /// The writer appended the op (or the caller is a writer already).
    Appended,
    /// The request cannot be served, with the reason.
    Refused(String),
}

impl ServiceRequest {
    /// The request's encoding on the wire.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes a request, with a clear refusal for anything else.
    pub fn decode(bytes: &[u8]) -> Result<ServiceRequest, ServiceAnswer> {
        codec::decode(bytes)
            .map_err(|e| ServiceAnswer::Refused(format!("malformed service request: {e}")))
    }
}

impl ServiceAnswer {
    /// The answer's encoding on the wire.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes an answer (a malformed one becomes a refusal naming the problem).
    pub fn decode(bytes: &[u8]) -> ServiceAnswer {
        codec::decode(bytes)
            .unwrap_or_else(|e| ServiceAnswer::Refused(format!("malformed service answer: {e}")))
    }
}

/// Checks an auto-add request from `caller` for `subnet`: an encoded `autoAddWriter` op
/// signed by the caller whose signature verifies.
pub fn check_auto_add(subnet: &Hash32, caller: &PublicKey, op: &[u8]) -> Result<(), String> {
    let signed = match decode_op(op)? {
        SubnetOp::Signed(signed) => signed,
        _ => return Err("not a signed subnet op".to_string()),
    };
    if signed.action != Action::AutoAddWriter {
        return Err(format!(
            "only autoAddWriter may be requested, not {}",
            signed.action.name()
        ));
    }
    if signed.signer != *caller {
        return Err("the op is not signed by the requesting peer".to_string());
    }
    crate::crypto::verify_hash(&signed.signer, &signed.hash(subnet), &signed.signature)
        .map_err(|e| format!("the op's signature does not verify: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Keypair;
    use crate::subnet::OpSigner;

    #[test]
    fn requests_and_answers_round_trip_and_garbage_is_refused() {
        let request = ServiceRequest::AutoAddWriter(ByteBuf::from(vec![1, 2, 3]));
        assert_eq!(ServiceRequest::decode(&request.encode()), Ok(request));
        assert!(matches!(
            ServiceRequest::decode(b"\xff\x00junk"),
            Err(ServiceAnswer::Refused(_))
        ));
        let answer = ServiceAnswer::Rejected(Rejection::Busy(3));
        assert_eq!(ServiceAnswer::decode(&answer.encode()), answer);
        assert!(matches!(
            ServiceAnswer::decode(b""),
            ServiceAnswer::Refused(_)
        ));
    }

    #[test]
    fn only_the_callers_own_auto_add_op_is_accepted() {
        let subnet = Hash32([3; 32]);
        let bob = Keypair::generate();
        let mallory = Keypair::generate();
        let op = OpSigner::new(bob.clone(), subnet).sign(Action::AutoAddWriter, 10);
        assert_eq!(check_auto_add(&subnet, &bob.public(), &op), Ok(()));
        // Relayed by someone else, for another subnet, another action, or garbage.
        assert!(check_auto_add(&subnet, &mallory.public(), &op).is_err());
        assert!(check_auto_add(&Hash32([4; 32]), &bob.public(), &op).is_err());
        let other =
            OpSigner::new(bob.clone(), subnet).sign(Action::AddWriter { key: bob.public() }, 10);
        assert!(check_auto_add(&subnet, &bob.public(), &other).is_err());
        assert!(check_auto_add(&subnet, &bob.public(), b"junk").is_err());
    }
}
