//! Chat rules: nicks, messages, moderation, pins, whitelist (reference trac-peer.md §2.2, §8,
//! with the apply-time gaps closed: posted messages always start undeleted and unpinned,
//! replies must name an existing message, every field is length-checked).

use super::keys;
use super::machine::{SubnetMachine, Verdict};
use super::values::{self, ChatMessage, PinRecord};
use crate::crypto::{Hash32, PublicKey};
use crate::ledger::{AppliedOp, LedgerError};
use crate::runtime::{CallContext, CallRequest, Invocation, MessageCall, OpKind};
use crate::store::StateAccess;

impl SubnetMachine {
    pub(super) fn mute_status(
        &self,
        state: &mut dyn StateAccess,
        signer: &PublicKey,
        user: &PublicKey,
        muted: bool,
    ) -> Result<Verdict, LedgerError> {
        let admin = Self::admin(state)?;
        let by_admin = admin == Some(*signer);
        let by_mod =
            Self::is_mod(state, signer)? && admin != Some(*user) && !Self::is_mod(state, user)?;
        if !by_admin && !by_mod {
            return Ok(Err(
                "mute needs the admin, or a moderator acting on a regular user".into(),
            ));
        }
        values::put(state, &keys::muted(user), &muted)?;
        Ok(Ok(()))
    }

    pub(super) fn set_nick(
        &self,
        state: &mut dyn StateAccess,
        signer: &PublicKey,
        user: &PublicKey,
        nick: &str,
    ) -> Result<Verdict, LedgerError> {
        if !values::switch(state, keys::CHAT_STATUS)? {
            return Ok(Err("chat is off".into()));
        }
        let admin = Self::admin(state)?;
        let allowed = signer == user
            || admin == Some(*signer)
            || (Self::is_mod(state, signer)?
                && admin != Some(*user)
                && !Self::is_mod(state, user)?);
        if !allowed {
            return Ok(Err("not allowed to set this user's nick".into()));
        }
        let owner_key = keys::nick_owner(nick);
        if state.get(&owner_key)?.is_some() {
            return Ok(Err(format!("nick {nick:?} is taken")));
        }
        if let Some(old) = values::get::<String>(state, &keys::nick(user))? {
            state.delete(&keys::nick_owner(&old))?;
        }
        values::put(state, &keys::nick(user), nick)?;
        values::put(state, &owner_key, &user.to_hex())?;
        Ok(Ok(()))
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn post_message(
        &self,
        state: &mut dyn StateAccess,
        op: &AppliedOp<'_>,
        author: &PublicKey,
        hash: &Hash32,
        text: &str,
        attachments: &[String],
        reply_to: Option<u64>,
    ) -> Result<Verdict, LedgerError> {
        if !values::switch(state, keys::CHAT_STATUS)? {
            return Ok(Err("chat is off".into()));
        }
        let is_admin = Self::admin(state)? == Some(*author);
        if !is_admin {
            if values::flag(state, &keys::muted(author))? {
                return Ok(Err("the author is muted".into()));
            }
            if values::flag(state, keys::WLST.as_bytes())?
                && !values::flag(state, &keys::whitelist(author))?
            {
                return Ok(Err("the author is not whitelisted".into()));
            }
        }
        let number = values::counter(state, keys::MSGL.as_bytes())?;
        if let Some(reply) = reply_to
            && reply >= number
        {
            return Ok(Err(format!(
                "reply to message {reply}, which does not exist"
            )));
        }
        // The contract's message hook may veto the message; its writes apply with it.
        if let Some(contract) = self.current_contract(state)? {
            let request = CallRequest {
                view: &*state,
                context: CallContext {
                    op_kind: OpKind::Message,
                    tx_hash: *hash,
                    sender: *author,
                    validator: None,
                    log_position: op.position,
                    checkpoint_time: op.time,
                },
                reserved: self.reserved.clone(),
            };
            let invocation = Invocation::Message(MessageCall {
                text: text.to_string(),
                author: author.0.to_vec(),
                number,
            });
            let outcome = self
                .runtime
                .execute(&contract, &request, &invocation)
                .map_err(|e| LedgerError::Node(e.to_string()))?;
            if let Err(e) = outcome.result {
                return Ok(Err(format!("the contract refused the message: {e}")));
            }
            Self::apply_writes(state, &outcome.writes)?;
        }
        let message = ChatMessage {
            kind: "msg".into(),
            msg: Some(text.to_string()),
            address: author.to_hex(),
            attachments: attachments.to_vec(),
            deleted_by: None,
            reply_to,
            pinned: false,
            pin_id: None,
        };
        let user_count = values::counter(state, &keys::user_message_count(author))?;
        values::put(state, &keys::message(number), &message)?;
        values::put(
            state,
            &keys::user_message(author, user_count),
            &format!("msg/{number}"),
        )?;
        values::put(state, keys::MSGL.as_bytes(), &(number + 1))?;
        values::put(state, &keys::user_message_count(author), &(user_count + 1))?;
        Ok(Ok(()))
    }

    pub(super) fn delete_message(
        &self,
        state: &mut dyn StateAccess,
        signer: &PublicKey,
        id: u64,
    ) -> Result<Verdict, LedgerError> {
        let key = keys::message(id);
        let Some(mut message) = values::get::<ChatMessage>(state, &key)? else {
            return Ok(Err(format!("message {id} does not exist")));
        };
        if message.deleted_by.is_some() {
            return Ok(Err(format!("message {id} is already deleted")));
        }
        let admin = Self::admin(state)?;
        let author_is_admin = admin.is_some_and(|a| a.to_hex() == message.address);
        let by_admin = admin == Some(*signer);
        let by_mod = Self::is_mod(state, signer)? && !author_is_admin;
        let by_author = signer.to_hex() == message.address;
        if !by_admin && !by_mod && !by_author {
            return Ok(Err("not allowed to delete this message".into()));
        }
        message.msg = None;
        message.attachments.clear();
        message.deleted_by = Some(signer.to_hex());
        let n = values::counter(state, keys::DELML.as_bytes())?;
        values::put(state, &key, &message)?;
        values::put(state, &keys::deleted(n), &id)?;
        values::put(state, keys::DELML.as_bytes(), &(n + 1))?;
        Ok(Ok(()))
    }

    fn moderates(state: &dyn StateAccess, signer: &PublicKey) -> Result<bool, LedgerError> {
        Ok(Self::admin(state)? == Some(*signer) || Self::is_mod(state, signer)?)
    }

    pub(super) fn pin_message(
        &self,
        state: &mut dyn StateAccess,
        signer: &PublicKey,
        id: u64,
        pinned: bool,
    ) -> Result<Verdict, LedgerError> {
        let key = keys::message(id);
        let Some(mut message) = values::get::<ChatMessage>(state, &key)? else {
            return Ok(Err(format!("message {id} does not exist")));
        };
        if !Self::moderates(state, signer)? {
            return Ok(Err("pinning needs the admin or a moderator".into()));
        }
        let slot = match message.pin_id {
            Some(slot) => slot,
            None => {
                let slot = values::counter(state, keys::PNL.as_bytes())?;
                values::put(state, keys::PNL.as_bytes(), &(slot + 1))?;
                message.pin_id = Some(slot);
                slot
            }
        };
        values::put(state, &keys::pin(slot), &PinRecord { msg: id, pinned })?;
        message.pinned = pinned;
        values::put(state, &key, &message)?;
        Ok(Ok(()))
    }

    pub(super) fn unpin_message(
        &self,
        state: &mut dyn StateAccess,
        signer: &PublicKey,
        slot: u64,
    ) -> Result<Verdict, LedgerError> {
        let Some(pin) = values::get::<PinRecord>(state, &keys::pin(slot))? else {
            return Ok(Err(format!("pin slot {slot} does not exist")));
        };
        if !Self::moderates(state, signer)? {
            return Ok(Err("unpinning needs the admin or a moderator".into()));
        }
        let key = keys::message(pin.msg);
        if let Some(mut message) = values::get::<ChatMessage>(state, &key)? {
            message.pinned = false;
            message.pin_id = None;
            values::put(state, &key, &message)?;
        }
        values::put(
            state,
            &keys::pin(slot),
            &PinRecord {
                msg: pin.msg,
                pinned: false,
            },
        )?;
        Ok(Ok(()))
    }
}
