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
//!                   caps, whitelist           │ read 1 frame, parse + check completely
//!                                             │ Msg::Submit{Arc<Event>, reply}
//!  upstream brokers ──TCP──> upstream thread ─┤ (1 per --remote; acks upstream itself)
//!                                             v
//!                          ┌──────────── dispatcher (1 thread) ─────────────┐
//!                          │ owns: subscriber table, `pending` key set,     │
//!                          │ filter table (sxd-xpath), test-event and       │
//!                          │ summary timers; reads LMDB (read txns)         │
//!                          └──┬────────────────┬──────────────────┬─────────┘
//!   Record{key,time,reply}    │                │ send(MSG_DONTWAIT)│ Arc<Event> (try_send)
//!   (unbounded)               v                v per subscriber    v
//!        committer (1 thread): batch,   Outbox (per subscriber):   handler thread:
//!        one LMDB txn + fsync, then     the frame goes straight    print / save, and
//!        reply Accepted to each author; to the kernel; what it     --cmd runner pool
//!        Msg::Committed(keys) back      does not take is queued
//!        pruner (1 thread): chunked     (bounded) and the
//!        deletes of expired records     subscriber's thread woken
//!  subscribers ──TCP──> [accept subscribers] ─spawn─> broadcaster thread (1 per connection):
//!                       caps, whitelist        authenticate, writes the Outbox backlog,
//!                                              reads acks/iamalives (recv MSG_DONTWAIT),
//!                                              own iamalive timer ─Msg::Register/SetFilters─> dispatcher
//!  main thread: sigwait — SIGHUP reloads --subscriber-config, SIGINT/SIGTERM shut down in order
//! ```
//!
//! * **Receiver** ([`receiver`]): one thread per author connection with an absolute
//!   deadline. It parses the frame once ([`xml`]), checks root, ivorn, role, version,
//!   IVOID ([`ivoid`]) and the VOEvent 2.0 schema ([`schema`]), then submits the resulting
//!   [`voevent::Event`] to the dispatcher and blocks on its private reply channel.
//! * **Dispatcher** ([`dispatcher`]): the only thread that decides "new or duplicate", so
//!   check-and-insert is atomic without locks: a key is duplicate if it is in `pending`
//!   (accepted, not yet committed) or in LMDB. A new event is written at once to every
//!   subscriber whose filters ([`filters`]: each distinct expression evaluated at most
//!   once per event) select it, through that subscriber's [`outbox::Outbox`]: one
//!   non-blocking `send` of the shared bytes, no thread wake-up unless the socket is full.
//!   Then it goes to the committer and the handlers. Fan-out never waits for the disk.
//! * **Committer** ([`committer`]): group commit. It drains every waiting record into one
//!   write transaction and commits once, then answers each author: an `ack` therefore
//!   means the record is durable. It reports the keys back so `pending` shrinks.
//! * **Pruner** ([`committer::run_pruner`]): deletes expired records oldest first, in
//!   short transactions, so ingest never waits behind it.
//! * **Broadcaster** ([`broadcaster`]): one thread per subscriber. It owns the read side
//!   of its socket and its counters (acked, iamalive outstanding), writes whatever backlog
//!   the dispatcher left in its outbox (blocking, under the write deadline), and drops
//!   itself by the decision table's rules; the dispatcher drops it if its backlog is full.
//! * **Upstream** ([`upstream`]): one thread per `--remote`, the subscriber state
//!   machine with backoff; its events take the author path from the dispatcher on.
//! * **Handlers** ([`handlers`]): off the dispatcher's path, bounded queues.
//! * **Accept loops** ([`listener`]): check the whitelist ([`whitelist`]) and the
//!   connection caps at accept and start each connection thread with an explicit stack.
//!
//! ## Ownership
//!
//! | what | owner | shared how |
//! |---|---|---|
//! | an event's bytes (frame as received) | [`voevent::Event`] | `Arc<Event>` in outbox backlogs and the handler queue |
//! | dedup decision, subscriber table, filters | dispatcher thread | messages only ([`dispatcher::Msg`]) |
//! | LMDB environment ([`store::Store`]) | `Arc<Store>` | read txns on the dispatcher, writes on committer and pruner |
//! | a subscriber socket | its broadcaster thread reads; its [`outbox::Outbox`] writes | `Arc<Outbox>` held by the thread and the dispatcher; one mutex orders their writes |
//! | connection counts | [`listener::ListenerState`] | atomics, a per-address map under a mutex |
//!
//! ## Modules
//!
//! Wire and formats: [`frame`] (VTP framing), [`transport`] (Transport messages),
//! [`xml`] (hardened parser), [`schema`] + [`xsd`] (VOEvent 2.0 validation), [`ivoid`],
//! [`voevent`] (the event and its checks), [`testevent`]. Runtime: [`broker`] (start-up
//! and wiring), [`listener`], [`receiver`], [`broadcaster`], [`dispatcher`],
//! [`committer`], [`store`], [`outbox`], [`filters`], [`handlers`], [`upstream`],
//! [`siteconfig`], [`signals`]. Configuration: [`cli`]. Utilities: [`time`].

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
pub mod pool;
pub mod receiver;
pub mod schema;
pub mod signals;
pub mod siteconfig;
pub mod store;
pub mod testevent;
pub mod time;
pub mod transport;
pub mod upstream;
pub mod verdict;
pub mod voevent;
pub mod whitelist;
pub mod xml;
pub mod xsd;
