//! # bolide: a VOEvent broker
//!
//! bolide moves IVOA VOEvent 2.0 packets between authors, brokers and subscribers over the
//! VOEvent Transport Protocol (VTP): TCP, each message a 4-byte big-endian length and then
//! XML. It speaks Comet's wire format byte for byte and accepts Comet 3.1.0's command line.
//!
//! ## Threads and channels
//!
//! ```text
//!  authors ──TCP──> [accept authors] ─spawn─> receiver thread (1 per connection)
//!                                             │ read 1 frame, parse + check completely
//!                                             │ Msg::Submit{Arc<Event>, reply}
//!                                             v
//!                          ┌──────────── dispatcher (1 thread) ─────────────┐
//!                          │ owns: subscriber table, `pending` key set,     │
//!                          │ test-event timer; reads LMDB (read txns)       │
//!                          └───┬─────────────────────────────────┬──────────┘
//!            Record{key,time,reply} (unbounded)     Arc<Event> (bounded, try_send;
//!                              v                     full => that subscriber dropped)
//!                committer (1 thread): batch,                    v
//!                one LMDB txn + fsync, then          broadcaster thread (1 per subscriber)
//!                reply Accepted to each author;      writes frames, drains acks/iamalives
//!                Msg::Committed(keys) back           (recv MSG_DONTWAIT), own iamalive timer
//!                pruner (1 thread): chunked
//!                deletes of expired records
//!  subscribers ──TCP──> [accept subscribers] ─spawn─> broadcaster thread ─Msg::Register─> dispatcher
//! ```
//!
//! * **Receiver** ([`receiver`]): one thread per author connection with an absolute
//!   deadline. It parses the frame once ([`xml`]), checks root, ivorn, role, version,
//!   IVOID ([`ivoid`]) and the VOEvent 2.0 schema ([`schema`]), then submits the resulting
//!   [`voevent::Event`] to the dispatcher and blocks on its private reply channel.
//! * **Dispatcher** ([`dispatcher`]): the only thread that decides "new or duplicate", so
//!   check-and-insert is atomic without locks: a key is duplicate if it is in `pending`
//!   (accepted, not yet committed) or in LMDB. A new event is queued at once to every
//!   subscriber (one `Arc` clone each: the bytes live in memory once), then handed to the
//!   committer. Fan-out never waits for the disk.
//! * **Committer** ([`committer`]): group commit. It drains every waiting record into one
//!   write transaction and commits once, then answers each author: an `ack` therefore
//!   means the record is durable. It reports the keys back so `pending` shrinks.
//! * **Pruner** ([`committer::run_pruner`]): deletes expired records oldest first, in
//!   short transactions, so ingest never waits behind it.
//! * **Broadcaster** ([`broadcaster`]): one thread per subscriber. It owns its socket and
//!   its counters (sent, acked, iamalive outstanding) and drops itself by the decision
//!   table's rules; the dispatcher drops it (and shuts its socket) if its queue is full.
//! * **Accept loops** ([`listener`]): check the whitelist ([`whitelist`]) at accept and
//!   start each connection thread with an explicit stack size.
//!
//! ## Ownership
//!
//! | what | owner | shared how |
//! |---|---|---|
//! | an event's bytes (frame as received) | [`voevent::Event`] | `Arc<Event>` to every subscriber queue |
//! | dedup decision, subscriber table | dispatcher thread | messages only ([`dispatcher::Msg`]) |
//! | LMDB environment ([`store::Store`]) | `Arc<Store>` | read txns on the dispatcher, writes on committer and pruner |
//! | a subscriber socket | its broadcaster thread | a `try_clone` held by the dispatcher, used only to shut it down |
//!
//! ## Modules
//!
//! Wire and formats: [`frame`] (VTP framing), [`transport`] (Transport messages),
//! [`xml`] (hardened parser), [`schema`] + [`xsd`] (VOEvent 2.0 validation), [`ivoid`],
//! [`voevent`] (the event and its checks), [`testevent`]. Runtime: [`broker`] (start-up
//! and wiring), [`listener`], [`receiver`], [`broadcaster`], [`dispatcher`],
//! [`committer`], [`store`]. Configuration: [`cli`]. Utilities: [`time`].

pub mod broadcaster;
pub mod broker;
pub mod cli;
pub mod committer;
pub mod dispatcher;
pub mod filters;
pub mod frame;
pub mod handlers;
pub mod ivoid;
pub mod listener;
pub mod outbox;
pub mod receiver;
pub mod schema;
pub mod signals;
pub mod siteconfig;
pub mod store;
pub mod testevent;
pub mod time;
pub mod transport;
pub mod upstream;
pub mod voevent;
pub mod whitelist;
pub mod xml;
pub mod xsd;
