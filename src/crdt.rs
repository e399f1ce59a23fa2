//! CRDT keyspaces: counters, sets, maps and multi-value registers (the `crdts` crate).
//!
//! A CRDT keyspace stores, in each replica's object (`crate::object::Object`, which sits
//! above this module and holds a [`CrdtState`]), a state-based CRDT instead of siblings.
//! Client operations are applied at the *lead* replica only: the lead serialises
//! operations per key under its lock, so using the lead's node incarnation as the CRDT
//! actor gives every operation a unique dot — the same reason the lead issues dots for
//! plain writes (docs/ARCHITECTURE.md). The resulting state is replicated like any
//! object, and replicas join states with the CRDT merge wherever versions meet
//! (replication, read reconciliation, read repair). That merge is commutative,
//! associative and idempotent (property tests in `policy`, whose CRDT resolver calls the
//! functions here).
//!
//! Removes honour only what the client observed: a set (or map) remove carries the causal
//! context of the client's read, so an add made concurrently elsewhere survives (add
//! wins), exactly riak_dt's ORSWOT semantics.

#![deny(clippy::disallowed_methods)] // protocol code: the seam is crate::env (clippy.toml)

use std::collections::BTreeMap;

use crdts::ctx::RmCtx;
use crdts::{mvreg, orswot, pncounter, CmRDT, CvRDT, Dot, MVReg, Orswot, PNCounter, VClock};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::causality::VersionVector;
use crate::keyspace::ConflictPolicy;

/// The CRDT actor: the name of the lead replica that applied the operation.
pub type Actor = String;

/// Errors applying CRDT operations.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CrdtError {
    /// The operation does not belong to the keyspace's policy (e.g. `sadd` on a counter).
    #[error("operation {op} does not apply to a {policy} keyspace")]
    WrongOperation {
        /// The operation's name.
        op: &'static str,
        /// The keyspace's policy.
        policy: ConflictPolicy,
    },
    /// The keyspace does not hold CRDTs.
    #[error("keyspace policy {0} is not a CRDT policy (use counter, set, map or register)")]
    NotCrdt(ConflictPolicy),
    /// The stored state is of another CRDT type than the keyspace's policy.
    #[error("stored state is a {found}, but the keyspace uses {policy}")]
    StateMismatch {
        /// The stored state's type.
        found: &'static str,
        /// The keyspace's policy.
        policy: ConflictPolicy,
    },
    /// The per-actor total of a counter would leave `u64`.
    #[error("counter overflow: the operation would exceed a counter's range (u64)")]
    Overflow,
    /// A state from storage or the wire breaks an invariant of its CRDT.
    #[error("malformed CRDT state: {0}")]
    Malformed(String),
}

/// Check invariants of a state that came from outside (disk, a peer) before it is used.
///
/// The `crdts` crate's multi-value register *asserts* (panics) when compared with a
/// register holding the same (clock, value) entry twice; such a state can only come from
/// corruption or a faulty peer, and must be refused rather than crash the node. Registers
/// appear at the top level and inside map fields; both are checked.
pub fn check_well_formed(state: &Option<CrdtState>) -> Result<(), CrdtError> {
    match state {
        Some(CrdtState::Register(reg)) => check_register(reg),
        Some(CrdtState::Map(map)) => map
            .iter()
            .try_for_each(|entry| check_register(&entry.val.1.register)),
        _ => Ok(()),
    }
}

/// A register's entries must be distinct. Its fields are private, so look at its serde
/// form (string-keyed clocks and byte values: representable as JSON).
fn check_register(reg: &MVReg<Vec<u8>, Actor>) -> Result<(), CrdtError> {
    let value = serde_json::to_value(reg).map_err(|e| CrdtError::Malformed(e.to_string()))?;
    if let Some(vals) = value.get("vals").and_then(|v| v.as_array()) {
        for (i, a) in vals.iter().enumerate() {
            if vals[..i].contains(a) {
                return Err(CrdtError::Malformed(
                    "a register holds the same (clock, value) entry twice".into(),
                ));
            }
        }
    }
    Ok(())
}

/// One field of a map CRDT: a register, a counter and a set, updated independently (a
/// field is used as whichever of them the client writes; the others stay empty).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Field {
    /// Multi-value register.
    pub register: MVReg<Vec<u8>, Actor>,
    /// PN-counter.
    pub counter: PNCounter<Actor>,
    /// Add-wins set.
    pub set: Orswot<Vec<u8>, Actor>,
}

/// An operation on one part of a [`Field`], as the nested map applies it.
#[derive(Debug, Clone)]
pub enum FieldCmOp {
    /// Register write.
    Register(mvreg::Op<Vec<u8>, Actor>),
    /// Counter step.
    Counter(pncounter::Op<Actor>),
    /// Set add or remove.
    Set(orswot::Op<Vec<u8>, Actor>),
}

impl CmRDT for Field {
    type Op = FieldCmOp;
    type Validation = CrdtError;

    fn validate_op(&self, _op: &Self::Op) -> Result<(), Self::Validation> {
        // Ops are generated by the lead from its own state, so they are always in order.
        Ok(())
    }

    fn apply(&mut self, op: Self::Op) {
        match op {
            FieldCmOp::Register(op) => self.register.apply(op),
            FieldCmOp::Counter(op) => self.counter.apply(op),
            FieldCmOp::Set(op) => self.set.apply(op),
        }
    }
}

impl CvRDT for Field {
    type Validation = CrdtError;

    fn validate_merge(&self, _other: &Self) -> Result<(), Self::Validation> {
        Ok(())
    }

    fn merge(&mut self, other: Self) {
        self.register.merge(other.register);
        self.counter.merge(other.counter);
        self.set.merge(other.set);
    }
}

impl crdts::ResetRemove<Actor> for Field {
    fn reset_remove(&mut self, clock: &VClock<Actor>) {
        self.register.reset_remove(clock);
        self.counter.reset_remove(clock);
        self.set.reset_remove(clock);
    }
}

/// The map CRDT type.
pub type FieldMap = crdts::Map<String, Field, Actor>;

/// The CRDT state a replica stores for one key of a CRDT keyspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CrdtState {
    /// `counter` keyspaces.
    Counter(PNCounter<Actor>),
    /// `set` keyspaces.
    Set(Orswot<Vec<u8>, Actor>),
    /// `map` keyspaces.
    Map(FieldMap),
    /// `register` keyspaces.
    Register(MVReg<Vec<u8>, Actor>),
}

impl CrdtState {
    fn kind(&self) -> &'static str {
        match self {
            CrdtState::Counter(_) => "counter",
            CrdtState::Set(_) => "set",
            CrdtState::Map(_) => "map",
            CrdtState::Register(_) => "register",
        }
    }

    /// A fixed rank, so merging mismatched states (only possible with corrupt data) is
    /// still deterministic and commutative.
    fn rank(&self) -> u8 {
        match self {
            CrdtState::Counter(_) => 0,
            CrdtState::Set(_) => 1,
            CrdtState::Map(_) => 2,
            CrdtState::Register(_) => 3,
        }
    }

    fn empty(policy: ConflictPolicy) -> Result<Self, CrdtError> {
        Ok(match policy {
            ConflictPolicy::Counter => CrdtState::Counter(PNCounter::new()),
            ConflictPolicy::Set => CrdtState::Set(Orswot::new()),
            ConflictPolicy::Map => CrdtState::Map(FieldMap::new()),
            ConflictPolicy::Register => CrdtState::Register(MVReg::new()),
            other => return Err(CrdtError::NotCrdt(other)),
        })
    }
}

/// An operation on a map field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FieldOp {
    /// Replace the field's register values held by the lead.
    RegisterWrite(ByteBuf),
    /// Add to the field's counter (negative to subtract).
    CounterAdd(i64),
    /// Add members to the field's set.
    SetAdd(Vec<ByteBuf>),
    /// Remove members the client observed (per the update's context) from the field's set.
    SetRemove(Vec<ByteBuf>),
}

/// A client operation on a CRDT key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CrdtOp {
    /// Counter: add (negative to subtract).
    CounterAdd(i64),
    /// Set: add members.
    SetAdd(Vec<ByteBuf>),
    /// Set: remove members, only the adds the update's context covers.
    SetRemove(Vec<ByteBuf>),
    /// Register: write a value. With an empty context it replaces what the lead holds;
    /// with a read's context it replaces what was read (values written concurrently
    /// through other leads survive).
    RegisterWrite(ByteBuf),
    /// Map: update one field.
    MapUpdate {
        /// Field name.
        field: String,
        /// What to do to it.
        op: FieldOp,
    },
    /// Map: remove a field (the edits the context covers; concurrent edits survive).
    MapRemove {
        /// Field name.
        field: String,
    },
}

impl CrdtOp {
    /// Short name for messages.
    pub fn name(&self) -> &'static str {
        match self {
            CrdtOp::CounterAdd(_) => "counter-add",
            CrdtOp::SetAdd(_) => "set-add",
            CrdtOp::SetRemove(_) => "set-remove",
            CrdtOp::RegisterWrite(_) => "register-write",
            CrdtOp::MapUpdate { .. } => "map-update",
            CrdtOp::MapRemove { .. } => "map-remove",
        }
    }

    /// The policy this operation belongs to.
    fn policy(&self) -> ConflictPolicy {
        match self {
            CrdtOp::CounterAdd(_) => ConflictPolicy::Counter,
            CrdtOp::SetAdd(_) | CrdtOp::SetRemove(_) => ConflictPolicy::Set,
            CrdtOp::RegisterWrite(_) => ConflictPolicy::Register,
            CrdtOp::MapUpdate { .. } | CrdtOp::MapRemove { .. } => ConflictPolicy::Map,
        }
    }

    /// Bytes of values and members the operation carries (for the value-size limit).
    pub fn payload_len(&self) -> usize {
        let sum = |v: &[ByteBuf]| v.iter().map(|b| b.len()).sum::<usize>();
        match self {
            CrdtOp::CounterAdd(_) | CrdtOp::MapRemove { .. } => 0,
            CrdtOp::SetAdd(m) | CrdtOp::SetRemove(m) => sum(m),
            CrdtOp::RegisterWrite(v) => v.len(),
            CrdtOp::MapUpdate { field, op } => {
                field.len()
                    + match op {
                        FieldOp::RegisterWrite(v) => v.len(),
                        FieldOp::CounterAdd(_) => 0,
                        FieldOp::SetAdd(m) | FieldOp::SetRemove(m) => sum(m),
                    }
            }
        }
    }

    /// Refuse an operation that does not belong to `policy`.
    pub fn check(&self, policy: ConflictPolicy) -> Result<(), CrdtError> {
        // Only a CRDT policy has a state type (`NotCrdt` otherwise).
        CrdtState::empty(policy)?;
        if self.policy() != policy {
            return Err(CrdtError::WrongOperation {
                op: self.name(),
                policy,
            });
        }
        Ok(())
    }
}

/// One map field as a client reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldValue {
    /// Concurrent register values (sorted).
    pub register: Vec<ByteBuf>,
    /// Counter value.
    pub counter: i64,
    /// Set members (sorted).
    pub set: Vec<ByteBuf>,
}

/// A CRDT's value as a client reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CrdtValue {
    /// Counter total.
    Counter(i64),
    /// Set members, sorted.
    Set(Vec<ByteBuf>),
    /// Concurrent register values, sorted.
    Register(Vec<ByteBuf>),
    /// Map fields.
    Map(BTreeMap<String, FieldValue>),
}

fn to_vclock(vv: &VersionVector) -> VClock<Actor> {
    let mut c = VClock::new();
    for (actor, counter) in &vv.0 {
        c.apply(Dot::new(actor.clone(), *counter));
    }
    c
}

fn to_vv(c: &VClock<Actor>) -> VersionVector {
    VersionVector(c.iter().map(|d| (d.actor.clone(), d.counter)).collect())
}

fn counter_value(c: &PNCounter<Actor>) -> i64 {
    // `read` is a BigInt; its decimal text is the one conversion the crate exposes
    // without a `num` dependency. Saturate rather than fail on absurd totals.
    let text = c.read().to_string();
    text.parse::<i64>().unwrap_or(if text.starts_with('-') {
        i64::MIN
    } else {
        i64::MAX
    })
}

/// The counter step for adding `n` at `lead`, or `None` for 0. Refuses a step that would
/// overflow the lead's per-actor total (the crate would panic on it).
fn counter_op(
    c: &PNCounter<Actor>,
    lead: &str,
    n: i64,
) -> Result<Option<pncounter::Op<Actor>>, CrdtError> {
    let steps = n.unsigned_abs();
    if steps == 0 {
        return Ok(None);
    }
    // A zero step returns the actor's current total without changing anything.
    let current = if n > 0 {
        c.inc_many(lead.to_string(), 0).dot.counter
    } else {
        c.dec_many(lead.to_string(), 0).dot.counter
    };
    current.checked_add(steps).ok_or(CrdtError::Overflow)?;
    Ok(Some(if n > 0 {
        c.inc_many(lead.to_string(), steps)
    } else {
        c.dec_many(lead.to_string(), steps)
    }))
}

fn members(m: &[ByteBuf]) -> Vec<Vec<u8>> {
    m.iter().map(|b| b.to_vec()).collect()
}

fn sorted(mut v: Vec<Vec<u8>>) -> Vec<ByteBuf> {
    v.sort();
    v.dedup();
    v.into_iter().map(ByteBuf::from).collect()
}

/// Write `value` to a register as `lead`. An empty context means "replace what the lead
/// holds"; otherwise the write's clock is the client's context plus a fresh dot of the
/// lead, so it replaces what the client read and stays concurrent with the rest.
fn register_write(
    reg: &mut MVReg<Vec<u8>, Actor>,
    lead: &str,
    value: Vec<u8>,
    ctx: &VersionVector,
) -> Result<(), CrdtError> {
    let held = reg.read_ctx().add_clock;
    let mut clock = if ctx.0.is_empty() {
        held.clone()
    } else {
        to_vclock(ctx)
    };
    // Higher than any dot this lead issued or the client saw, so the value's clock is new.
    // A context at the end of the range is refused: a wrapped counter would not be new.
    let counter = held
        .get(&lead.to_string())
        .max(clock.get(&lead.to_string()))
        .checked_add(1)
        .ok_or(CrdtError::Overflow)?;
    clock.apply(Dot::new(lead.to_string(), counter));
    reg.apply(mvreg::Op::Put { clock, val: value });
    Ok(())
}

/// Apply a client operation at the lead replica `lead` to the stored state (created empty
/// if absent). `ctx` is the causal context of the client's read. A refused operation
/// leaves the state as it was.
pub fn apply(
    policy: ConflictPolicy,
    state: &mut Option<CrdtState>,
    lead: &str,
    op: &CrdtOp,
    ctx: &VersionVector,
) -> Result<(), CrdtError> {
    op.check(policy)?;
    let absent = state.is_none();
    let mut s = match state.take() {
        Some(s) => s,
        None => CrdtState::empty(policy)?,
    };
    // Every refusal in `apply_to` happens before it changes anything.
    let result = apply_to(&mut s, policy, lead, op, ctx);
    if result.is_ok() || !absent {
        *state = Some(s);
    }
    result
}

fn apply_to(
    s: &mut CrdtState,
    policy: ConflictPolicy,
    lead: &str,
    op: &CrdtOp,
    ctx: &VersionVector,
) -> Result<(), CrdtError> {
    let actor = lead.to_string();
    // The crdts crate derives the next dot with a plain `+ 1` (a panic in debug builds, a
    // wrap that re-issues dot 0 in release); refuse first when the lead's entry is full.
    // Only a corrupt stored state can get there: client contexts are sealed.
    if top_clock(s).get(&actor) == u64::MAX {
        return Err(CrdtError::Overflow);
    }
    match (s, op) {
        (CrdtState::Counter(c), CrdtOp::CounterAdd(n)) => {
            if let Some(op) = counter_op(c, lead, *n)? {
                c.apply(op);
            }
        }
        (CrdtState::Set(set), CrdtOp::SetAdd(m)) => {
            let add = set.read_ctx().derive_add_ctx(actor);
            let op = set.add_all(members(m), add);
            set.apply(op);
        }
        (CrdtState::Set(set), CrdtOp::SetRemove(m)) => {
            // Only the adds the client's read observed are removed; a context ahead of
            // this replica is kept (deferred) and applied when those adds arrive.
            let op = set.rm_all(
                members(m),
                RmCtx {
                    clock: to_vclock(ctx),
                },
            );
            set.apply(op);
        }
        (CrdtState::Register(reg), CrdtOp::RegisterWrite(v)) => {
            register_write(reg, lead, v.to_vec(), ctx)?;
        }
        (CrdtState::Map(map), CrdtOp::MapUpdate { field, op }) => {
            let current = map.get(field).val.unwrap_or_default();
            // Checked before building the op: the map's updater closure cannot fail.
            let step = match op {
                FieldOp::CounterAdd(n) => counter_op(&current.counter, lead, *n)?,
                _ => None,
            };
            let add = map.read_ctx().derive_add_ctx(actor);
            let client = to_vclock(ctx);
            let up = map.update(field.clone(), add, |f, add| match op {
                FieldOp::RegisterWrite(v) => {
                    // Replace the values this field's register holds. The map's own clock
                    // would also cover other fields' dots, and nested clocks holding
                    // foreign dots make the map merge non-associative (property tests
                    // found it), so the clock is the register's plus the new dot.
                    let mut clock = f.register.read_ctx().add_clock;
                    clock.apply(add.dot);
                    FieldCmOp::Register(mvreg::Op::Put {
                        clock,
                        val: v.to_vec(),
                    })
                }
                FieldOp::CounterAdd(_) => match step {
                    Some(step) => FieldCmOp::Counter(step),
                    // Adding 0: an empty add to the set records the field without change.
                    None => FieldCmOp::Set(f.set.add_all(Vec::new(), add)),
                },
                FieldOp::SetAdd(m) => FieldCmOp::Set(f.set.add_all(members(m), add)),
                FieldOp::SetRemove(m) => {
                    // The client's map context also holds other fields' dots, which this
                    // set will never see; bounding it by the set's clock removes the same
                    // observed adds without leaving a remove deferred forever.
                    let mut clock = client.clone();
                    clock.glb(&f.set.clock());
                    FieldCmOp::Set(f.set.rm_all(members(m), RmCtx { clock }))
                }
            });
            map.apply(up);
        }
        (CrdtState::Map(map), CrdtOp::MapRemove { field }) => {
            let rm = map.rm(
                field.clone(),
                RmCtx {
                    clock: to_vclock(ctx),
                },
            );
            map.apply(rm);
        }
        (s, _) => {
            return Err(CrdtError::StateMismatch {
                found: s.kind(),
                policy,
            })
        }
    }
    Ok(())
}

/// What two replicas holding equal CRDT states share, as bytes for anti-entropy's
/// fingerprint: the value a client reads (sorted, so independent of hash-map order) and the
/// clock of every operation the state has seen; for counters, whose value hides which
/// actor counted what, the per-actor counts. Internal bookkeeping that no read shows
/// (deferred removes, the dots left under a member after a partial remove) is not covered:
/// two states differing only there look equal until a later operation shows the
/// difference.
pub fn digest(state: &CrdtState) -> Vec<u8> {
    let policy = match state {
        CrdtState::Counter(_) => ConflictPolicy::Counter,
        CrdtState::Set(_) => ConflictPolicy::Set,
        CrdtState::Map(_) => ConflictPolicy::Map,
        CrdtState::Register(_) => ConflictPolicy::Register,
    };
    let mut out = vec![state.rank()];
    let value = value(policy, &Some(state.clone()));
    let _ = rmp_serde::encode::write_named(&mut out, &value);
    let _ = rmp_serde::encode::write_named(&mut out, &top_clock(state));
    if let CrdtState::Counter(c) = state {
        let _ = rmp_serde::encode::write_named(&mut out, c);
    }
    out
}

/// The clock from which the lead derives the next operation's dot.
fn top_clock(s: &CrdtState) -> VClock<Actor> {
    match s {
        CrdtState::Counter(_) => VClock::new(),
        CrdtState::Set(set) => set.clock(),
        CrdtState::Map(map) => map.read_ctx().add_clock,
        CrdtState::Register(reg) => reg.read_ctx().add_clock,
    }
}

/// Join `other` into `state` (the CRDT merge; both absent = nothing).
pub fn merge(state: &mut Option<CrdtState>, other: &Option<CrdtState>) {
    let Some(theirs) = other else { return };
    let Some(mine) = state.as_mut() else {
        *state = Some(theirs.clone());
        return;
    };
    match (mine, theirs) {
        (CrdtState::Counter(a), CrdtState::Counter(b)) => a.merge(b.clone()),
        (CrdtState::Set(a), CrdtState::Set(b)) => a.merge(b.clone()),
        (CrdtState::Map(a), CrdtState::Map(b)) => a.merge(b.clone()),
        (CrdtState::Register(a), CrdtState::Register(b)) => a.merge(b.clone()),
        (mine, theirs) => {
            // Only corrupt data mixes types; keep a deterministic winner and say so.
            tracing::warn!(
                mine = mine.kind(),
                theirs = theirs.kind(),
                "merging CRDT states of different types"
            );
            if theirs.rank() > mine.rank() {
                *mine = theirs.clone();
            }
        }
    }
}

/// The causal context a client needs to remove what it read (sets, maps) or replace it
/// (registers). Counters need none.
pub fn context(state: &Option<CrdtState>) -> VersionVector {
    match state {
        None | Some(CrdtState::Counter(_)) => VersionVector::new(),
        Some(CrdtState::Set(s)) => to_vv(&s.read_ctx().rm_clock),
        Some(CrdtState::Map(m)) => to_vv(&m.read_ctx().rm_clock),
        Some(CrdtState::Register(r)) => to_vv(&r.read_ctx().rm_clock),
    }
}

fn field_value(f: &Field) -> FieldValue {
    FieldValue {
        register: sorted(f.register.read().val),
        counter: counter_value(&f.counter),
        set: sorted(f.set.read().val.into_iter().collect()),
    }
}

/// The value a client reads; an absent state reads as the policy's empty value.
pub fn value(policy: ConflictPolicy, state: &Option<CrdtState>) -> Option<CrdtValue> {
    let empty;
    let s = match state {
        Some(s) => s,
        None => {
            empty = CrdtState::empty(policy).ok()?;
            &empty
        }
    };
    Some(match s {
        CrdtState::Counter(c) => CrdtValue::Counter(counter_value(c)),
        CrdtState::Set(s) => CrdtValue::Set(sorted(s.read().val.into_iter().collect())),
        CrdtState::Register(r) => CrdtValue::Register(sorted(r.read().val)),
        CrdtState::Map(m) => CrdtValue::Map(
            m.iter()
                .map(|e| {
                    let (k, v) = e.val;
                    (k.clone(), field_value(v))
                })
                .collect(),
        ),
    })
}

#[cfg(test)]
mod well_formed_tests {
    use super::*;

    /// Goal: a register with a duplicated entry is refused instead of panicking the node
    /// later (the crate's equality asserts on it); a normal register passes.
    #[test]
    fn duplicate_register_entry_is_malformed() {
        let mut reg: MVReg<Vec<u8>, Actor> = MVReg::new();
        let op = reg.write(
            b"v".to_vec(),
            reg.read_ctx().derive_add_ctx("n1".to_string()),
        );
        reg.apply(op);
        let good = Some(CrdtState::Register(reg.clone()));
        assert!(check_well_formed(&good).is_ok());
        let mut json = serde_json::to_value(CrdtState::Register(reg)).unwrap();
        let vals = json
            .pointer_mut("/register/vals")
            .and_then(|v| v.as_array_mut())
            .unwrap();
        let first = vals[0].clone();
        vals.push(first);
        let bad: CrdtState = serde_json::from_value(json).unwrap();
        assert!(matches!(
            check_well_formed(&Some(bad)),
            Err(CrdtError::Malformed(_))
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> ByteBuf {
        ByteBuf::from(s.as_bytes().to_vec())
    }

    /// Goal: operations of another policy, and CRDT ops on plain keyspaces, are refused.
    #[test]
    fn wrong_operations_are_refused() {
        let mut s = None;
        let e = apply(
            ConflictPolicy::Counter,
            &mut s,
            "n1",
            &CrdtOp::SetAdd(vec![b("x")]),
            &VersionVector::new(),
        )
        .unwrap_err();
        assert!(matches!(e, CrdtError::WrongOperation { .. }), "{e}");
        assert!(s.is_none(), "nothing stored on a refused op");
        let e = CrdtOp::CounterAdd(1)
            .check(ConflictPolicy::Siblings)
            .unwrap_err();
        assert_eq!(e, CrdtError::NotCrdt(ConflictPolicy::Siblings));
    }

    /// Goal: a counter near the top of its range refuses the overflowing step, no panic.
    #[test]
    fn counter_overflow_is_an_error() {
        let mut s = None;
        let ctx = VersionVector::new();
        apply(
            ConflictPolicy::Counter,
            &mut s,
            "n1",
            &CrdtOp::CounterAdd(i64::MAX),
            &ctx,
        )
        .unwrap();
        apply(
            ConflictPolicy::Counter,
            &mut s,
            "n1",
            &CrdtOp::CounterAdd(i64::MAX),
            &ctx,
        )
        .unwrap();
        let e = apply(
            ConflictPolicy::Counter,
            &mut s,
            "n1",
            &CrdtOp::CounterAdd(i64::MAX),
            &ctx,
        )
        .unwrap_err();
        assert_eq!(e, CrdtError::Overflow);
        assert_eq!(
            value(ConflictPolicy::Counter, &s),
            Some(CrdtValue::Counter(i64::MAX))
        );
    }

    /// Goal: a stored set, map or register whose clock holds the lead at u64::MAX (only
    /// corrupt data can: contexts are sealed) refuses the next operation with an error
    /// instead of the crdts crate's `+ 1` panicking (debug) or wrapping (release); a
    /// register write whose context claims u64::MAX is refused the same way.
    #[test]
    fn exhausted_crdt_clocks_refuse_instead_of_panicking() {
        let none = VersionVector::new();
        let mut set: Orswot<Vec<u8>, Actor> = Orswot::new();
        set.apply(orswot::Op::Add {
            dot: Dot::new("n1".to_string(), u64::MAX),
            members: vec![b"a".to_vec()],
        });
        let mut s = Some(CrdtState::Set(set));
        let e = apply(
            ConflictPolicy::Set,
            &mut s,
            "n1",
            &CrdtOp::SetAdd(vec![b("b")]),
            &none,
        )
        .unwrap_err();
        assert_eq!(e, CrdtError::Overflow);
        let mut map = FieldMap::new();
        let add = map.read_ctx().derive_add_ctx("n1".to_string());
        let mut dot = add.dot.clone();
        dot.counter = u64::MAX;
        let mut add = add;
        add.dot = dot;
        let op = map.update("f".to_string(), add, |f, add| {
            FieldCmOp::Set(f.set.add_all(vec![b"x".to_vec()], add))
        });
        map.apply(op);
        let mut s = Some(CrdtState::Map(map));
        let e = apply(
            ConflictPolicy::Map,
            &mut s,
            "n1",
            &CrdtOp::MapUpdate {
                field: "g".into(),
                op: FieldOp::CounterAdd(1),
            },
            &none,
        )
        .unwrap_err();
        assert_eq!(e, CrdtError::Overflow);
        let mut s = None;
        let claim = VersionVector([("n1".to_string(), u64::MAX)].into_iter().collect());
        let e = apply(
            ConflictPolicy::Register,
            &mut s,
            "n1",
            &CrdtOp::RegisterWrite(b("v")),
            &claim,
        )
        .unwrap_err();
        assert_eq!(e, CrdtError::Overflow);
    }

    /// Goal: a set remove with the read's context removes what was read, and a remove
    /// without context removes nothing.
    #[test]
    fn set_remove_needs_the_observed_context() {
        let mut s = None;
        let none = VersionVector::new();
        apply(
            ConflictPolicy::Set,
            &mut s,
            "n1",
            &CrdtOp::SetAdd(vec![b("a"), b("b")]),
            &none,
        )
        .unwrap();
        apply(
            ConflictPolicy::Set,
            &mut s,
            "n1",
            &CrdtOp::SetRemove(vec![b("a")]),
            &none,
        )
        .unwrap();
        assert_eq!(
            value(ConflictPolicy::Set, &s),
            Some(CrdtValue::Set(vec![b("a"), b("b")]))
        );
        let ctx = context(&s);
        apply(
            ConflictPolicy::Set,
            &mut s,
            "n1",
            &CrdtOp::SetRemove(vec![b("a")]),
            &ctx,
        )
        .unwrap();
        assert_eq!(
            value(ConflictPolicy::Set, &s),
            Some(CrdtValue::Set(vec![b("b")]))
        );
    }

    /// Goal: map fields of each kind update independently; a field remove with context
    /// drops the field.
    #[test]
    fn map_fields() {
        let mut s = None;
        let none = VersionVector::new();
        let up = |field: &str, op| CrdtOp::MapUpdate {
            field: field.into(),
            op,
        };
        for op in [
            up("name", FieldOp::RegisterWrite(b("ann"))),
            up("name", FieldOp::RegisterWrite(b("bob"))),
            up("visits", FieldOp::CounterAdd(3)),
            up("visits", FieldOp::CounterAdd(-1)),
            up("tags", FieldOp::SetAdd(vec![b("x"), b("y")])),
        ] {
            apply(ConflictPolicy::Map, &mut s, "n1", &op, &none).unwrap();
        }
        let ctx = context(&s);
        apply(
            ConflictPolicy::Map,
            &mut s,
            "n1",
            &up("tags", FieldOp::SetRemove(vec![b("x")])),
            &ctx,
        )
        .unwrap();
        let Some(CrdtValue::Map(m)) = value(ConflictPolicy::Map, &s) else {
            panic!("not a map")
        };
        assert_eq!(m["name"].register, vec![b("bob")]);
        assert_eq!(m["visits"].counter, 2);
        assert_eq!(m["tags"].set, vec![b("y")]);
        let ctx = context(&s);
        apply(
            ConflictPolicy::Map,
            &mut s,
            "n1",
            &CrdtOp::MapRemove {
                field: "visits".into(),
            },
            &ctx,
        )
        .unwrap();
        let Some(CrdtValue::Map(m)) = value(ConflictPolicy::Map, &s) else {
            panic!("not a map")
        };
        assert!(!m.contains_key("visits"), "{m:?}");
    }

    /// Goal: a register write with a read's context replaces what was read; a blind write
    /// replaces what the lead holds.
    #[test]
    fn register_writes() {
        let mut a = None;
        let none = VersionVector::new();
        apply(
            ConflictPolicy::Register,
            &mut a,
            "n1",
            &CrdtOp::RegisterWrite(b("1")),
            &none,
        )
        .unwrap();
        let mut other = None;
        apply(
            ConflictPolicy::Register,
            &mut other,
            "n2",
            &CrdtOp::RegisterWrite(b("2")),
            &none,
        )
        .unwrap();
        merge(&mut a, &other);
        assert_eq!(
            value(ConflictPolicy::Register, &a),
            Some(CrdtValue::Register(vec![b("1"), b("2")]))
        );
        let ctx = context(&a);
        apply(
            ConflictPolicy::Register,
            &mut a,
            "n1",
            &CrdtOp::RegisterWrite(b("3")),
            &ctx,
        )
        .unwrap();
        assert_eq!(
            value(ConflictPolicy::Register, &a),
            Some(CrdtValue::Register(vec![b("3")]))
        );
    }
}
