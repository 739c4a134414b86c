//! The MSB state machine: accounts, fees, validators, the subnet registry and settlements.

use serde::{Deserialize, Serialize};

use super::ops::{
    self, AdminAction, AdminOp, CompleteOp, FEE, MAX_CHANNEL_BYTES, MsbOp, PartialOp, STAKE,
    UserAction,
};
use super::{MsbGenesis, Receipt};
use crate::codec;
use crate::crypto::{
    BatchItem, Domain, DomainKind, Hash32, PublicKey, Signature, VerifiedSignatures,
};
use crate::ledger::{AppliedOp, LedgerError, StateMachine};
use crate::store::{StateAccess, StateView, StoreError};

/// Role bit: whitelisted (may join the validators).
pub const ROLE_WHITELISTED: u8 = 0x1;
/// Role bit: validator (an MSB writer that co-signs and appends user ops).
pub const ROLE_VALIDATOR: u8 = 0x2;
/// Role bit: indexer (signs checkpoints).
pub const ROLE_INDEXER: u8 = 0x4;
/// Role bit: the admin.
pub const ROLE_ADMIN: u8 = 0x8;

/// Farthest expiry an op may name, in checkpoints after the one applying it.
pub const MAX_OP_TTL: u64 = 100_000;

/// Most MSB indexers.
pub const MAX_INDEXERS: usize = 32;

/// Longest MSB op.
pub const MAX_OP_BYTES: usize = 4096;

/// An account (`acct/<hex>`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Liquid balance, base units.
    #[serde(with = "codec::be_u128")]
    pub balance: u128,
    /// Locked stake, base units.
    #[serde(with = "codec::be_u128")]
    pub staked: u128,
    /// Role bits.
    pub role: u8,
}

impl Account {
    /// Whether the account has role `bit`.
    pub fn has(&self, bit: u8) -> bool {
        self.role & bit != 0
    }
}

/// A registered subnet (`deploy/<subnet hex>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    /// Who registered it (earns part of its tx fees).
    pub deployer: PublicKey,
    /// Its channel.
    pub channel: String,
    /// The registering tx.
    pub tx_hash: Hash32,
}

/// Where an applied op is (`tx/<hash hex>`): the replay guard and the locator of its receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxLocation {
    /// The checkpoint height that included it.
    pub height: u64,
    /// Its position in the confirmed order.
    pub position: u64,
    /// The log entry that carries it: its writer,
    pub writer: PublicKey,
    /// its sequence number,
    pub seq: u64,
    /// and the op's index in the entry.
    pub index: u32,
}

/// Totals: TNK minted (genesis, faucet) and burned; the sum of all balances and stakes plus
/// `burned` always equals `minted`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Supply {
    /// Minted so far.
    #[serde(with = "codec::be_u128")]
    pub minted: u128,
    /// Burned so far.
    #[serde(with = "codec::be_u128")]
    pub burned: u128,
}

/// State keys.
pub mod keys {
    use crate::crypto::{Hash32, PublicKey};

    /// The admin key.
    pub const ADMIN: &[u8] = b"admin";
    /// The genesis (so a store alone rebuilds the machine).
    pub const GENESIS: &[u8] = b"sys/genesis";
    /// The indexer set, sequencer first.
    pub const INDEXERS: &[u8] = b"sys/indexers";
    /// Height of the last indexer-set change (at most one per checkpoint, so that a subnet
    /// following the set can verify each change with the set in force before it).
    pub const INDEXERS_CHANGED: &[u8] = b"sys/indexers-changed";
    /// Minted and burned totals.
    pub const SUPPLY: &[u8] = b"supply";

    /// `acct/<hex>`.
    pub fn account(key: &PublicKey) -> Vec<u8> {
        format!("acct/{}", key.to_hex()).into_bytes()
    }
    /// `sys/writer/<hex>`: the MSB log writers (validators, indexers, the admin).
    pub fn writer(key: &PublicKey) -> Vec<u8> {
        format!("sys/writer/{}", key.to_hex()).into_bytes()
    }
    /// `tx/<hex>`.
    pub fn tx(hash: &Hash32) -> Vec<u8> {
        format!("tx/{}", hash.to_hex()).into_bytes()
    }
    /// `deploy/<hex>`.
    pub fn deployment(subnet: &Hash32) -> Vec<u8> {
        format!("deploy/{}", subnet.to_hex()).into_bytes()
    }
    /// `faucet/<hex>`: a peer the faucet funded.
    pub fn faucet(key: &PublicKey) -> Vec<u8> {
        format!("faucet/{}", key.to_hex()).into_bytes()
    }
}

/// Reads a value of the MSB state (canonical encoding).
pub fn read<T: Serialize + serde::de::DeserializeOwned>(
    state: &dyn StateView,
    key: &[u8],
) -> Result<Option<T>, LedgerError> {
    match state.get(key)? {
        None => Ok(None),
        Some(bytes) => codec::decode(&bytes).map(Some).map_err(|e| {
            LedgerError::Node(format!(
                "MSB state value {} does not decode: {e}",
                String::from_utf8_lossy(key)
            ))
        }),
    }
}

fn write<T: Serialize>(
    state: &mut dyn StateAccess,
    key: &[u8],
    value: &T,
) -> Result<(), LedgerError> {
    Ok(state.put(key, &codec::encode(value))?)
}

/// The account of `key` (default: empty reader).
pub fn account(state: &dyn StateView, key: &PublicKey) -> Result<Account, LedgerError> {
    Ok(read(state, &keys::account(key))?.unwrap_or_default())
}

/// The admin key.
pub fn admin(state: &dyn StateView) -> Result<Option<PublicKey>, LedgerError> {
    read(state, keys::ADMIN)
}

/// The indexer set, sequencer first.
pub fn indexer_set(state: &dyn StateView) -> Result<Vec<PublicKey>, LedgerError> {
    Ok(read(state, keys::INDEXERS)?.unwrap_or_default())
}

/// The registration of `subnet`, if any.
pub fn deployment(
    state: &dyn StateView,
    subnet: &Hash32,
) -> Result<Option<Deployment>, LedgerError> {
    read(state, &keys::deployment(subnet))
}

/// Where the op `tx_hash` was applied, if it was.
pub fn tx_location(
    state: &dyn StateView,
    tx_hash: &Hash32,
) -> Result<Option<TxLocation>, LedgerError> {
    read(state, &keys::tx(tx_hash))
}

/// The minted and burned totals.
pub fn supply(state: &dyn StateView) -> Result<Supply, LedgerError> {
    Ok(read(state, keys::SUPPLY)?.unwrap_or_default())
}

/// Why the rules refused an op, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RefusalCode {
    /// The op does not decode or is oversized.
    Malformed,
    /// A user op appended by another writer than its validator.
    WrongAppender,
    /// The requester is the validator.
    SelfValidation,
    /// The co-signer is not a validator.
    NotAValidator,
    /// Outside its validity window.
    Expired,
    /// Its tx hash is applied already.
    Duplicate,
    /// A signature does not verify.
    BadSignature,
    /// The requester has no account.
    NoAccount,
    /// Not enough balance for the fee (and amount, stake).
    InsufficientBalance,
    /// A field is out of range or not a valid key.
    InvalidField,
    /// The subnet is registered already.
    AlreadyDeployed,
    /// The subnet is not registered.
    NotDeployed,
    /// Only whitelisted accounts may do this.
    NotWhitelisted,
    /// The account's role does not allow it.
    Role,
    /// The network has no admin.
    NoAdmin,
    /// Not signed (or appended) by the admin.
    NotAdmin,
    /// The network has no faucet.
    NoFaucet,
    /// The faucet funded this peer already.
    AlreadyFunded,
    /// A balance would overflow.
    Overflow,
    /// The last indexer cannot go.
    LastIndexer,
    /// The indexer set is full.
    TooManyIndexers,
}

/// Why the rules refused an op (recorded in its receipt; state unchanged).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    /// The kind.
    pub code: RefusalCode,
    /// What exactly.
    pub message: String,
}

fn no(code: RefusalCode, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
    }
}

type Verdict = Result<Effects, Refusal>;

/// What an accepted op changes, computed before anything is written.
#[derive(Default)]
struct Effects {
    accounts: Vec<(PublicKey, Account)>,
    burned: u128,
    minted: u128,
    fee: u128,
    writers_added: Vec<PublicKey>,
    writers_removed: Vec<PublicKey>,
    indexers: Option<Vec<PublicKey>>,
    deployment: Option<(Hash32, Deployment)>,
    faucet: Option<PublicKey>,
}

/// A user op's effects before its fee is shared out (what the validator does not change).
struct Draft<'s> {
    book: Ledgerbook<'s>,
    effects: Effects,
    /// The deployer of the subnet a `tx` settles for (it may share the fee).
    subnet_deployer: Option<PublicKey>,
}

/// A working set of accounts touched by one op.
struct Ledgerbook<'s> {
    state: &'s dyn StateView,
    accounts: Vec<(PublicKey, Account)>,
}

impl<'s> Ledgerbook<'s> {
    fn new(state: &'s dyn StateView) -> Self {
        Ledgerbook {
            state,
            accounts: Vec::new(),
        }
    }

    fn get(&mut self, key: &PublicKey) -> Result<&mut Account, LedgerError> {
        let at = match self.accounts.iter().position(|(k, _)| k == key) {
            Some(at) => at,
            None => {
                let account = account(self.state, key)?;
                self.accounts.push((*key, account));
                self.accounts.len() - 1
            }
        };
        Ok(&mut self.accounts[at].1)
    }

    fn exists(&self, key: &PublicKey) -> Result<bool, LedgerError> {
        Ok(self.accounts.iter().any(|(k, _)| k == key)
            || self.state.get(&keys::account(key))?.is_some())
    }

    /// Takes `amount` from `key`'s balance.
    fn debit(&mut self, key: &PublicKey, amount: u128) -> Result<Result<(), Refusal>, LedgerError> {
        let account = self.get(key)?;
        match account.balance.checked_sub(amount) {
            Some(rest) => {
                account.balance = rest;
                Ok(Ok(()))
            }
            None => Ok(Err(no(
                RefusalCode::InsufficientBalance,
                format!(
                    "insufficient balance: {} TNK available, {} TNK needed",
                    ops::format_amount(account.balance),
                    ops::format_amount(amount)
                ),
            ))),
        }
    }

    fn credit(
        &mut self,
        key: &PublicKey,
        amount: u128,
    ) -> Result<Result<(), Refusal>, LedgerError> {
        let account = self.get(key)?;
        match account.balance.checked_add(amount) {
            Some(total) => {
                account.balance = total;
                Ok(Ok(()))
            }
            None => Ok(Err(no(RefusalCode::Overflow, "balance overflow"))),
        }
    }
}

/// `percent` (of 100) of `amount`, rounded down.
fn share(amount: u128, percent: u128) -> u128 {
    amount / 100 * percent + amount % 100 * percent / 100
}

/// The MSB's [`StateMachine`].
#[derive(Debug)]
pub struct MsbMachine {
    genesis: MsbGenesis,
    network: Hash32,
    signatures: VerifiedSignatures,
}

impl MsbMachine {
    /// The machine of the MSB network `genesis` defines.
    pub fn new(genesis: MsbGenesis) -> Self {
        MsbMachine {
            network: genesis.id(),
            genesis,
            signatures: VerifiedSignatures::new(),
        }
    }

    /// The network id.
    pub fn network(&self) -> Hash32 {
        self.network
    }

    /// The genesis.
    pub fn genesis(&self) -> &MsbGenesis {
        &self.genesis
    }

    /// The genesis recorded in an MSB state.
    pub fn genesis_in(state: &dyn StateView) -> Result<Option<MsbGenesis>, LedgerError> {
        read(state, keys::GENESIS)
    }

    fn check_expiry(height: u64, expires: u64) -> Result<(), Refusal> {
        if height > expires {
            return Err(no(
                RefusalCode::Expired,
                format!("expired at height {expires} (applying at {height})"),
            ));
        }
        if expires > height.saturating_add(MAX_OP_TTL) {
            return Err(no(
                RefusalCode::Expired,
                format!("expiry {expires} is more than {MAX_OP_TTL} heights ahead"),
            ));
        }
        Ok(())
    }

    /// The requester may not co-sign its own operation (checked by the machine after the
    /// appender and before the validator's role).
    pub fn check_not_own_validator(
        requester: &PublicKey,
        validator: &PublicKey,
    ) -> Result<(), Refusal> {
        if requester == validator {
            return Err(no(
                RefusalCode::SelfValidation,
                "the requester cannot validate its own operation",
            ));
        }
        Ok(())
    }

    /// Whether the rules that depend neither on the validator nor on the signatures let
    /// `requester` do `action` on `state` now: the requester has an account, the action's own
    /// rules hold (`InvalidField`, `AlreadyDeployed`, `NotDeployed`, `NotWhitelisted`,
    /// `Role`, …) and its balance pays the fee (and amount or stake) — the same checks, in
    /// the same order and with the same refusals, as applying the op after its signatures.
    /// What a requester can be told before signing; the outer error is a fault of this node.
    pub fn preflight(
        &self,
        state: &dyn StateView,
        requester: &PublicKey,
        action: &UserAction,
    ) -> Result<Result<(), Refusal>, LedgerError> {
        // The tx hash only names a new deployment, which a preflight discards.
        Ok(self
            .draft_user(state, requester, action, &Hash32::ZERO)?
            .map(|_| ()))
    }

    /// The effects of `requester`'s `action` before the fee is shared out (the rules of
    /// [`MsbMachine::preflight`]).
    fn draft_user<'s>(
        &self,
        state: &'s dyn StateView,
        requester: &PublicKey,
        action: &UserAction,
        tx_hash: &Hash32,
    ) -> Result<Result<Draft<'s>, Refusal>, LedgerError> {
        let requester = *requester;
        let mut book = Ledgerbook::new(state);
        if !book.exists(&requester)? {
            return Ok(Err(no(
                RefusalCode::NoAccount,
                format!("requester {requester} has no account"),
            )));
        }
        let mut effects = Effects {
            fee: FEE,
            ..Effects::default()
        };
        let mut subnet_deployer = None;
        match action {
            UserAction::Transfer { to, amount } => {
                if to.validate().is_err() {
                    return Ok(Err(no(
                        RefusalCode::InvalidField,
                        "the recipient is not a valid public key",
                    )));
                }
                if let Err(e) = book.debit(&requester, FEE)? {
                    return Ok(Err(e));
                }
                if *to != requester {
                    if let Err(e) = book.debit(&requester, *amount)? {
                        return Ok(Err(e));
                    }
                    if let Err(e) = book.credit(to, *amount)? {
                        return Ok(Err(e));
                    }
                }
            }
            UserAction::DeploySubnet { subnet, channel } => {
                if channel.is_empty()
                    || channel.len() > MAX_CHANNEL_BYTES
                    || channel.chars().any(char::is_control)
                {
                    return Ok(Err(no(
                        RefusalCode::InvalidField,
                        format!(
                            "subnet channel must be 1 to {MAX_CHANNEL_BYTES} bytes without control characters"
                        ),
                    )));
                }
                if *subnet == self.network {
                    return Ok(Err(no(
                        RefusalCode::InvalidField,
                        "a subnet cannot have the MSB network's id",
                    )));
                }
                if deployment(state, subnet)?.is_some() {
                    return Ok(Err(no(
                        RefusalCode::AlreadyDeployed,
                        format!("subnet {subnet} is already deployed"),
                    )));
                }
                if let Err(e) = book.debit(&requester, FEE)? {
                    return Ok(Err(e));
                }
                effects.deployment = Some((
                    *subnet,
                    Deployment {
                        deployer: requester,
                        channel: channel.clone(),
                        tx_hash: *tx_hash,
                    },
                ));
            }
            UserAction::Tx { subnet, .. } => {
                let Some(deployed) = deployment(state, subnet)? else {
                    return Ok(Err(no(
                        RefusalCode::NotDeployed,
                        format!("subnet {subnet} is not deployed"),
                    )));
                };
                if let Err(e) = book.debit(&requester, FEE)? {
                    return Ok(Err(e));
                }
                subnet_deployer = Some(deployed.deployer);
            }
            UserAction::JoinValidators => {
                let account = *book.get(&requester)?;
                if !account.has(ROLE_WHITELISTED) {
                    return Ok(Err(no(
                        RefusalCode::NotWhitelisted,
                        "only whitelisted accounts can join the validators",
                    )));
                }
                if account.has(ROLE_VALIDATOR) {
                    return Ok(Err(no(RefusalCode::Role, "already a validator")));
                }
                if let Err(e) = book.debit(&requester, FEE + STAKE)? {
                    return Ok(Err(e));
                }
                let account = book.get(&requester)?;
                account.staked += STAKE;
                account.role |= ROLE_VALIDATOR;
                effects.writers_added.push(requester);
            }
            UserAction::LeaveValidators => {
                let account = *book.get(&requester)?;
                if !account.has(ROLE_VALIDATOR) {
                    return Ok(Err(no(RefusalCode::Role, "not a validator")));
                }
                if account.has(ROLE_INDEXER) || account.has(ROLE_ADMIN) {
                    return Ok(Err(no(
                        RefusalCode::Role,
                        "indexers and the admin cannot leave the validators",
                    )));
                }
                if let Err(e) = book.debit(&requester, FEE)? {
                    return Ok(Err(e));
                }
                let account = book.get(&requester)?;
                account.balance += account.staked;
                account.staked = 0;
                account.role &= !ROLE_VALIDATOR;
                effects.writers_removed.push(requester);
            }
        }
        Ok(Ok(Draft {
            book,
            effects,
            subnet_deployer,
        }))
    }

    fn apply_user(
        &self,
        state: &dyn StateView,
        op: &AppliedOp<'_>,
        complete: &CompleteOp,
        tx_hash: &Hash32,
    ) -> Result<Verdict, LedgerError> {
        let body = &complete.body;
        let validator = complete.validator;
        if op.writer != validator {
            return Ok(Err(no(
                RefusalCode::WrongAppender,
                "appended by a writer other than its validator",
            )));
        }
        if let Err(e) = Self::check_not_own_validator(&body.requester, &validator) {
            return Ok(Err(e));
        }
        if !account(state, &validator)?.has(ROLE_VALIDATOR) {
            return Ok(Err(no(
                RefusalCode::NotAValidator,
                format!("{validator} is not a validator"),
            )));
        }
        if let Err(e) = Self::check_expiry(op.height, body.expires) {
            return Ok(Err(e));
        }
        if state.get(&keys::tx(tx_hash))?.is_some() {
            return Ok(Err(no(RefusalCode::Duplicate, "duplicate transaction")));
        }
        if !self
            .signatures
            .verify(&body.requester, tx_hash, &complete.requester_sig)
        {
            return Ok(Err(no(
                RefusalCode::BadSignature,
                "the requester's signature does not verify",
            )));
        }
        let validation = PartialOp::validation_hash(&self.network, tx_hash, &validator);
        if !self
            .signatures
            .verify(&validator, &validation, &complete.validator_sig)
        {
            return Ok(Err(no(
                RefusalCode::BadSignature,
                "the validator's signature does not verify",
            )));
        }
        let requester = body.requester;
        let Draft {
            mut book,
            mut effects,
            subnet_deployer,
        } = match self.draft_user(state, &requester, &body.action, tx_hash)? {
            Ok(draft) => draft,
            Err(e) => return Ok(Err(e)),
        };
        // Fee split: (validator, deployer, burned) in percent; a `tx` shares it with the
        // subnet's deployer.
        let (to_validator, deployer, burned) = match subnet_deployer {
            None => (75u128, None, 25u128),
            Some(creator) if creator == requester => (50, None, 50),
            Some(creator) if creator == validator => (75, None, 25),
            Some(creator) => (50, Some((creator, 25u128)), 25),
        };
        let validator_part = share(FEE, to_validator);
        let deployer_part = deployer.map_or(0, |(_, p)| share(FEE, p));
        if let Err(e) = book.credit(&validator, validator_part)? {
            return Ok(Err(e));
        }
        if let Some((creator, _)) = deployer
            && let Err(e) = book.credit(&creator, deployer_part)?
        {
            return Ok(Err(e));
        }
        debug_assert_eq!(validator_part + deployer_part + share(FEE, burned), FEE);
        effects.burned = FEE - validator_part - deployer_part;
        effects.accounts = book.accounts;
        Ok(Ok(effects))
    }

    fn apply_admin(
        &self,
        state: &dyn StateView,
        op: &AppliedOp<'_>,
        admin_op: &AdminOp,
        tx_hash: &Hash32,
    ) -> Result<Verdict, LedgerError> {
        let Some(admin_key) = admin(state)? else {
            return Ok(Err(no(RefusalCode::NoAdmin, "the network has no admin")));
        };
        if let Err(e) = Self::check_expiry(op.height, admin_op.expires) {
            return Ok(Err(e));
        }
        if state.get(&keys::tx(tx_hash))?.is_some() {
            return Ok(Err(no(RefusalCode::Duplicate, "duplicate transaction")));
        }
        if !self
            .signatures
            .verify(&admin_key, tx_hash, &admin_op.signature)
        {
            return Ok(Err(no(RefusalCode::NotAdmin, "not signed by the admin")));
        }
        let mut book = Ledgerbook::new(state);
        let mut effects = Effects::default();
        let mut indexers = indexer_set(state)?;
        if matches!(
            admin_op.action,
            AdminAction::AddIndexer { .. } | AdminAction::RemoveIndexer { .. }
        ) && read::<u64>(state, keys::INDEXERS_CHANGED)? == Some(op.height)
        {
            return Ok(Err(no(
                RefusalCode::TooManyIndexers,
                "the indexer set already changes in this checkpoint (one change per checkpoint)",
            )));
        }
        // Fees of admin actions are paid by the admin and burned.
        let mut fee = FEE;
        match &admin_op.action {
            AdminAction::Whitelist { account } => {
                if account.validate().is_err() {
                    return Ok(Err(no(RefusalCode::InvalidField, "not a valid public key")));
                }
                let target = book.get(account)?;
                if target.has(ROLE_WHITELISTED) {
                    return Ok(Err(no(
                        RefusalCode::Role,
                        format!("{account} is already whitelisted"),
                    )));
                }
                target.role |= ROLE_WHITELISTED;
                fee = 0;
            }
            AdminAction::AddIndexer { key } => {
                let target = book.get(key)?;
                if !target.has(ROLE_VALIDATOR) || target.has(ROLE_INDEXER) {
                    return Ok(Err(no(
                        RefusalCode::Role,
                        format!("{key} must be a validator and not an indexer"),
                    )));
                }
                if indexers.len() >= MAX_INDEXERS {
                    return Ok(Err(no(
                        RefusalCode::TooManyIndexers,
                        format!("the network has {MAX_INDEXERS} indexers already"),
                    )));
                }
                target.role |= ROLE_INDEXER;
                indexers.push(*key);
                effects.indexers = Some(indexers);
            }
            AdminAction::RemoveIndexer { key } => {
                let target = book.get(key)?;
                if !target.has(ROLE_INDEXER) {
                    return Ok(Err(no(
                        RefusalCode::Role,
                        format!("{key} is not an indexer"),
                    )));
                }
                if indexers.len() == 1 {
                    return Ok(Err(no(
                        RefusalCode::LastIndexer,
                        "the last indexer cannot be removed",
                    )));
                }
                target.role &= !ROLE_INDEXER;
                indexers.retain(|k| k != key);
                effects.indexers = Some(indexers);
            }
            AdminAction::RemoveValidator { key } => {
                let target = book.get(key)?;
                if target.has(ROLE_INDEXER) || target.has(ROLE_ADMIN) {
                    return Ok(Err(no(
                        RefusalCode::Role,
                        "indexers and the admin cannot be removed",
                    )));
                }
                if !target.has(ROLE_WHITELISTED) && !target.has(ROLE_VALIDATOR) {
                    return Ok(Err(no(
                        RefusalCode::Role,
                        format!("{key} is neither whitelisted nor a validator"),
                    )));
                }
                if target.has(ROLE_VALIDATOR) {
                    effects.writers_removed.push(*key);
                }
                target.balance += target.staked;
                target.staked = 0;
                target.role = 0;
            }
        }
        if fee > 0
            && let Err(e) = book.debit(&admin_key, fee)?
        {
            return Ok(Err(no(
                RefusalCode::InsufficientBalance,
                format!("the admin cannot pay the fee: {e}"),
            )));
        }
        effects.fee = fee;
        effects.burned = fee;
        effects.accounts = book.accounts;
        Ok(Ok(effects))
    }

    fn apply_faucet(
        &self,
        state: &dyn StateView,
        op: &AppliedOp<'_>,
        to: &PublicKey,
    ) -> Result<Verdict, LedgerError> {
        let Some(amount) = self.genesis.faucet else {
            return Ok(Err(no(RefusalCode::NoFaucet, "this network has no faucet")));
        };
        if admin(state)? != Some(op.writer) {
            return Ok(Err(no(
                RefusalCode::NotAdmin,
                "only the admin's log can use the faucet",
            )));
        }
        if to.validate().is_err() {
            return Ok(Err(no(RefusalCode::InvalidField, "not a valid public key")));
        }
        if state.get(&keys::faucet(to))?.is_some() {
            return Ok(Err(no(
                RefusalCode::AlreadyFunded,
                format!("{to} was funded already"),
            )));
        }
        let mut book = Ledgerbook::new(state);
        if let Err(e) = book.credit(to, amount)? {
            return Ok(Err(e));
        }
        Ok(Ok(Effects {
            accounts: book.accounts,
            minted: amount,
            faucet: Some(*to),
            ..Effects::default()
        }))
    }

    fn commit(
        &self,
        state: &mut dyn StateAccess,
        op: &AppliedOp<'_>,
        tx_hash: &Hash32,
        effects: &Effects,
    ) -> Result<(), LedgerError> {
        for (key, account) in &effects.accounts {
            write(state, &keys::account(key), account)?;
        }
        for key in &effects.writers_added {
            state.put(&keys::writer(key), &[1])?;
        }
        for key in &effects.writers_removed {
            state.delete(&keys::writer(key))?;
        }
        if let Some(indexers) = &effects.indexers {
            for key in indexers {
                state.put(&keys::writer(key), &[1])?;
            }
            write(state, keys::INDEXERS, indexers)?;
            write(state, keys::INDEXERS_CHANGED, &op.height)?;
        }
        if let Some((subnet, deployment)) = &effects.deployment {
            write(state, &keys::deployment(subnet), deployment)?;
        }
        if let Some(to) = &effects.faucet {
            state.put(&keys::faucet(to), &[1])?;
        }
        if effects.burned > 0 || effects.minted > 0 {
            let mut supply = supply(state)?;
            supply.burned += effects.burned;
            supply.minted += effects.minted;
            write(state, keys::SUPPLY, &supply)?;
        }
        write(
            state,
            &keys::tx(tx_hash),
            &TxLocation {
                height: op.height,
                position: op.position,
                writer: op.writer,
                seq: op.seq,
                index: op.index,
            },
        )?;
        Ok(())
    }

    /// The tx hash of any op: user and admin ops have their signed hash; a faucet grant and
    /// undecodable bytes hash their bytes in the MSB domain.
    pub fn op_hash(&self, decoded: &Result<MsbOp, String>, bytes: &[u8]) -> Hash32 {
        match decoded {
            Ok(MsbOp::User(op)) => op.body.tx_hash(&self.network),
            Ok(MsbOp::Admin(op)) => op.hash(&self.network),
            _ => Domain::new(DomainKind::MsbOp, self.network).hash(bytes),
        }
    }
}

impl StateMachine for MsbMachine {
    fn genesis(&self, state: &mut dyn StateAccess) -> Result<(), StoreError> {
        let admin = self.genesis.admin;
        state.put(keys::GENESIS, &codec::encode(&self.genesis))?;
        state.put(keys::ADMIN, &codec::encode(&admin))?;
        state.put(keys::INDEXERS, &codec::encode(&vec![admin]))?;
        state.put(&keys::writer(&admin), &[1])?;
        let mut minted = 0u128;
        let mut admin_account = Account {
            role: ROLE_WHITELISTED | ROLE_VALIDATOR | ROLE_INDEXER | ROLE_ADMIN,
            ..Account::default()
        };
        let mut funded: Vec<(PublicKey, Account)> = Vec::new();
        for (key, amount) in &self.genesis.funds {
            minted = minted.saturating_add(*amount);
            if *key == admin {
                admin_account.balance = admin_account.balance.saturating_add(*amount);
            } else if let Some((_, a)) = funded.iter_mut().find(|(k, _)| k == key) {
                a.balance = a.balance.saturating_add(*amount);
            } else {
                funded.push((
                    *key,
                    Account {
                        balance: *amount,
                        ..Account::default()
                    },
                ));
            }
        }
        state.put(&keys::account(&admin), &codec::encode(&admin_account))?;
        for (key, account) in funded {
            state.put(&keys::account(&key), &codec::encode(&account))?;
        }
        state.put(keys::SUPPLY, &codec::encode(&Supply { minted, burned: 0 }))?;
        Ok(())
    }

    fn is_writer(&self, state: &dyn StateAccess, writer: &PublicKey) -> Result<bool, StoreError> {
        Ok(state.get(&keys::writer(writer))?.is_some())
    }

    fn indexers(&self, state: &dyn StateAccess) -> Result<Vec<PublicKey>, StoreError> {
        let bytes = state.get(keys::INDEXERS)?;
        let indexers: Vec<PublicKey> = bytes
            .and_then(|b| codec::decode(&b).ok())
            .unwrap_or_default();
        Ok(if indexers.is_empty() {
            vec![self.genesis.admin]
        } else {
            indexers
        })
    }

    fn prepare(&self, ops: &[&[u8]]) {
        let mut triples: Vec<(PublicKey, Hash32, Signature)> = Vec::new();
        for bytes in ops {
            if let Ok(MsbOp::User(op)) = ops::decode_op(bytes) {
                let tx_hash = op.body.tx_hash(&self.network);
                let validation = PartialOp::validation_hash(&self.network, &tx_hash, &op.validator);
                triples.push((op.body.requester, tx_hash, op.requester_sig));
                triples.push((op.validator, validation, op.validator_sig));
            }
        }
        let items = BatchItem::from_triples(&triples);
        self.signatures.verify_batch(&items);
    }

    fn apply(
        &self,
        state: &mut dyn StateAccess,
        op: &AppliedOp<'_>,
    ) -> Result<Option<Vec<u8>>, LedgerError> {
        let decoded = if op.bytes.len() > MAX_OP_BYTES {
            Err(format!(
                "op of {} bytes exceeds {MAX_OP_BYTES}",
                op.bytes.len()
            ))
        } else {
            ops::decode_op(op.bytes)
        };
        let tx_hash = self.op_hash(&decoded, op.bytes);
        let (kind, requester, validator, verdict) = match &decoded {
            Err(e) => (
                "malformed",
                None,
                None,
                Err(no(RefusalCode::Malformed, format!("malformed op: {e}"))),
            ),
            Ok(MsbOp::User(user)) => (
                user.body.action.name(),
                Some(user.body.requester),
                Some(user.validator),
                self.apply_user(state, op, user, &tx_hash)?,
            ),
            Ok(MsbOp::Admin(admin_op)) => (
                admin_op.action.name(),
                None,
                None,
                self.apply_admin(state, op, admin_op, &tx_hash)?,
            ),
            Ok(MsbOp::Faucet { to }) => {
                ("faucet", Some(*to), None, self.apply_faucet(state, op, to)?)
            }
        };
        let (fee, error) = match verdict {
            Ok(effects) => {
                self.commit(state, op, &tx_hash, &effects)?;
                (effects.fee, None)
            }
            Err(e) => {
                tracing::debug!(position = op.position, %tx_hash, "MSB op refused: {e}");
                (0, Some(e))
            }
        };
        let receipt = Receipt {
            tx_hash,
            kind: kind.to_string(),
            requester,
            validator,
            fee,
            error,
        };
        Ok(Some(codec::encode(&receipt)))
    }
}
