//! # bolide: a VOEvent broker
//!
//! bolide moves IVOA VOEvent 2.0 packets between authors, brokers and subscribers over the
//! VOEvent Transport Protocol (VTP): TCP, each message a 4-byte big-endian length and then
//! XML. It speaks Comet's wire format byte for byte and accepts Comet 3.1.0's command line.
//!
//! ## Threads and channels
//!
//! ```text
//!  authors ──TCP──> receiver thread (1 per connection: the thread holding the accept role
//!                   │ serves an author whose event has fully arrived on the spot, and
//!                   │ passes the role to a parked thread before anything can wait; caps +
//!                   │ whitelist checked at accept; read 1 frame, parse + check completely,
//!                   │ then --author-config prefixes and --author-rate bucket)
//!                   │ Msg::Submit{Arc<Event>, ReplyTo}   (the author's socket travels
//!                   │  with its event; the thread goes straight back to accept or parks)
//!  upstream brokers ──TCP──> upstream thread ─┤ (1 per --remote; acks upstream itself)
//!  Kafka topics ──> kafka-consumer thread ────┤ (feature `kafka`; Msg::Submit with a Settle:
//!                   commits an offset once the committer answered for its event)
//!                                             v                 │
//!                          ┌──────────── dispatcher (1 thread) ─┼───────────┐
//!                          │ owns: subscriber table, filter     │           │
//!                          │ table (sxd-xpath), test-event and  │           │
//!                          │ summary timers; reads LMDB; from   │           │
//!                          │ 2048 recipients shares the sends   │           │
//!                          │ with fan-out helpers (1 per CPU    │           │
//!                          │ beyond its own, at most 3)         │           │
//!                          └──┬────────────────┬────────────────┼──┬────────┘
//!   CommitQueue::admit        │                │ send(MSG_DONTWAIT)  │ Arc<Event> (try_send)
//!   (key joins `pending`)     v                v per subscriber      v
//!        committer (1 thread): takes    Outbox (per subscriber):   handler thread:
//!        every queued record, one LMDB  the frame goes straight    print / save, and
//!        txn + fsync, then `pending`    to the kernel; what it     --cmd runner pool
//!        shrinks and each ReplyTo is    does not take is queued
//!        answered: ack, one send        (bounded) and the
//!        (--no-sync: no such thread;    subscriber's thread woken
//!        the dispatcher commits)
//!        pruner (1 thread): chunked
//!        deletes of expired records
//!  subscribers ──TCP──> broadcaster thread (1 per connection, accepted the same way):
//!                       authenticate, writes the Outbox backlog, reads acks/iamalives
//!                       (recv MSG_DONTWAIT), own iamalive timer ─Msg::Register/Start/SetFilters─> dispatcher
//!  main thread: sigwait — SIGHUP reloads --subscriber-config and --author-config,
//!               SIGINT/SIGTERM shut down in order
//! ```
//!
//! * **Receiver** ([`receiver`]): one thread per author connection with an absolute
//!   deadline. It parses the frame once ([`xml`]), checks root, ivorn, role, version,
//!   IVOID ([`ivoid`]) and the VOEvent 2.0 schema ([`schema`]), then the operator's policy
//!   (the IVORN prefixes its network may publish under, [`authorconfig`], and its
//!   address's rate, [`ratelimit`]: a refusal is its nak, the event goes no further),
//!   then submits the resulting [`voevent::Event`] to the dispatcher together with the
//!   connection itself ([`verdict::ReplyTo`]), and goes back to `accept`: it never waits
//!   for the verdict. Upstream events never meet that policy. With the archive on, the
//!   thread that checked an event (author, upstream or Kafka consumer) also compresses
//!   it for the archive ([`voevent::Event::packed`]), so the one committing thread does
//!   not.
//! * **Dispatcher** ([`dispatcher`]): the only thread that decides "new or duplicate" and
//!   the only one that admits keys, so check-and-insert is atomic: a key is duplicate if
//!   it is pending in the [`committer::CommitQueue`] (accepted, not yet committed) or in
//!   LMDB. A new event is written at once to every subscriber whose filters ([`filters`]:
//!   each distinct expression evaluated at most once per event) select it, through that
//!   subscriber's [`outbox::Outbox`]: one non-blocking `send` of the shared bytes, no
//!   thread wake-up unless the socket is full. From [`fanout::PARALLEL_FROM`] recipients
//!   on, the sends are split into contiguous shares written at once by the dispatcher and
//!   its long-lived helper threads ([`fanout`]); the next event starts when every share
//!   is written, so each subscriber's events stay in order. Then it goes to the commit
//!   queue and the handlers. Fan-out never waits for the disk.
//! * **Committer** ([`committer`]): group commit. It takes every queued record into one
//!   write transaction, with each new event's archive entry ([`archive`]: the broker's
//!   ordered log of accepted events, one seq each; its ivorn index follows every few
//!   hundred entries), and commits once; only then do the
//!   keys leave `pending` and each author get its `ack` (one non-blocking send on its
//!   [`verdict::ReplyTo`], then close): an `ack` therefore means the record is durable
//!   and the event archived. Duplicates are answered by the
//!   dispatcher the same way. Under `--no-sync` a commit costs microseconds, less than
//!   a hand-off between threads, so no committer thread is started: the dispatcher runs
//!   the same [`committer::Committer`] whenever its inbox is empty (and every
//!   [`committer::INLINE_BATCH`] records).
//! * **Pruner** ([`pruner`]): reads through the records and deletes the expired ones in
//!   short transactions, so ingest never waits behind it; then the archive's oldest
//!   entries past its age or size.
//! * **Readers of the archive** ([`archive_reader`]): `bolide-archive` opens the event
//!   database read-only in its own process; LMDB read transactions never block the
//!   broker's writer.
//! * **Broadcaster** ([`broadcaster`]): one thread per subscriber. It registers with the
//!   dispatcher before it sends `authenticate`; the dispatcher holds the events it accepts
//!   meanwhile and, once the answer (filters) arrives or the wait ends (`Msg::Start`),
//!   sends those that pass, in order, so no event is lost while a subscriber connects.
//!   It owns the read side
//!   of its socket and its counters (acked, iamalive outstanding), writes whatever backlog
//!   the dispatcher left in its outbox (blocking, under the write deadline), and drops
//!   itself by the decision table's rules; the dispatcher drops it if its backlog is full.
//! * **Catch-up** ([`replay`]): a subscriber that names its position in the archive (a
//!   bolide, with the `bolide-position` Param of its authenticate answer) is sent the
//!   archived events after it that pass its filters, a chunk of at most its queue at a
//!   time, then handed over to live fan-out. The hand-over is
//!   exact although fan-out happens before the commit gives an event its seq: archive
//!   order is acceptance order; the dispatcher holds the events accepted since the
//!   subscriber registered (`Msg::Replaying` makes that a window of the latest ones) and
//!   gives a fence (records admitted so far) that the replay waits to see settled, so it
//!   reads everything accepted before the registration; at the archive's end
//!   `Msg::HandOver` names the last entry read, and the dispatcher sends the held events
//!   after it, or, if its window no longer reaches back that far, has the replay read on.
//!   At most `--max-replays` catch-ups read at once (`replay::ReplaySlots`, a FIFO of
//!   turns), each on a short-lived helper thread at nice 19 while the subscriber's own
//!   thread reads its acks; the rest wait, kept alive, so replays leave CPUs to live
//!   traffic.
//! * **Upstream** ([`upstream`]): one thread per `--remote`, the subscriber state
//!   machine with backoff; its events take the author path from the dispatcher on, each
//!   with a [`verdict::Settle`] so that its position in the upstream's archive (in `meta`)
//!   moves past an event only once the event is settled here.
//! * **Kafka gateway** (`kafka`, cargo feature `kafka`): a consumer thread, one more
//!   source like an upstream, whose events travel with a [`verdict::Settle`] instead of
//!   an author's connection: the committer (or the dispatcher, for a duplicate) answers it
//!   on the consumer's channel, and the consumer commits a partition's offset only up to
//!   the first message not yet answered; partitions a group rebalance takes away are
//!   committed as far as settled and then forgotten. The consumer's figures (heartbeat
//!   age, assigned topics, lag from librdkafka's statistics) are in a
//!   `kafka::stats::KafkaStats` behind `Gateway::stats`. A publisher thread reads the
//!   archive after its position (the last seq Kafka confirmed, kept in `meta`), woken by
//!   the commits that append to it ([`store::Store::wait_for_archive`]), and produces
//!   each event.
//! * **Handlers** ([`handlers`]): off the dispatcher's path, bounded queues. With the
//!   archive on, their thread is a reader of the archive with a position in `meta`
//!   (woken by commits like the Kafka publisher), so a crash never loses an event for
//!   them; with `--no-archive` the dispatcher hands them each new event.
//! * **Operator's view** ([`http`], `--http`): an accept thread that checks
//!   `--http-whitelist` and four request threads serving `/metrics`, `/status`,
//!   `/healthz`, a status page and the archive (`/events`, through
//!   [`archive_reader::ArchiveReader::from_store`]: the broker's own LMDB environment, read
//!   transactions only). What they show is counted where the work happens, in
//!   [`metrics::METRICS`]: relaxed atomics, latency histograms of atomic buckets, and the
//!   subscribers' outboxes (each carries its subscriber's stat) and the upstreams' stats,
//!   registered while they are connected; a
//!   request reads those and never waits on a lock a serving thread holds longer than a
//!   counter update.
//! * **Listeners** ([`listener`]): connection threads accept for themselves
//!   (leader/followers): one holds the accept role and serves what cannot wait on the
//!   spot; before anything can wait it passes the role to the thread parked last (or a
//!   new one), so every connection that waits has its own thread and, under load, the
//!   next connections wait in the backlog instead of each waking a thread. Threads are
//!   reused (no thread start per event); the whitelist ([`whitelist`]) and the connection
//!   caps are checked at accept; stacks are sized explicitly, threads start through
//!   `pthread_create` ([`sys::spawn_detached`]) with nothing Rust's `std::thread` adds per
//!   thread, and the kernel queues up to [`listener::LISTEN_BACKLOG`] connections not
//!   yet accepted.
//!
//! A thread per subscriber costs its touched stack pages and its heap: bolide runs with
//! glibc's per-thread malloc cache off, no static TLS reserve at the top of each stack,
//! and one malloc arena per CPU ([`sys::restart_with_lean_threads`],
//! [`sys::limit_malloc_arenas`]), and an idle
//! subscriber holds no receive buffer and no backlog buffer (README, "How many
//! subscribers can one broker serve").
//!
//! Wake-ups between threads use mutexes and condition variables where a thread waits
//! for a batch (the commit queue, outbox backlogs):
//! crossbeam's receive spins and calls `sched_yield` before it sleeps, which on two CPUs
//! under load cost more than the work itself. The dispatcher's inbox and the handler
//! queue stay crossbeam channels.
//!
//! ## Ownership
//!
//! | what | owner | shared how |
//! |---|---|---|
//! | an event's bytes (frame as received) | [`voevent::Event`] | `Arc<Event>` in outbox backlogs and the handler queue |
//! | dedup decision, subscriber table, filters | dispatcher thread | messages only ([`dispatcher::Msg`]) |
//! | one share of a large event's copies | a fan-out helper thread, until it answers | the share's `Arc<Outbox>` clones over a channel; the dispatcher waits for the answer |
//! | keys accepted but not yet durable (`pending`) | [`committer::CommitQueue`] | admitted by the dispatcher, removed by the committer after the commit, under one mutex |
//! | LMDB environment ([`store::Store`]): dedup records and archive | `Arc<Store>` | read txns on the dispatcher and the Kafka publisher, writes on committer, pruner and (its position, in `meta`) the publisher; the archive's counters under one mutex held by the writer |
//! | Kafka offsets settled / the publisher's position | the `kafka-consumer` / `kafka-publisher` thread | verdicts on a channel; the offsets under a mutex shared with the consumer's rebalance callbacks (same thread); the position in `meta` |
//! | Kafka gateway figures (`KafkaStats`) | updated on the `kafka-consumer` thread | `Arc`; under a mutex held only to copy values |
//! | an upstream's catch-up position | its upstream thread | verdicts on a channel; the position in `meta` |
//! | the handlers' position in the archive | the handler thread | `--cmd` completions on a channel; the position in `meta` |
//! | a catch-up (reading the archive for one subscriber) | that subscriber's broadcaster thread, reading on a helper thread at nice 19 | read txns; `Msg::Replaying` / `Msg::HandOver` with the dispatcher, which holds the live events meanwhile |
//! | a subscriber socket (one descriptor) | its [`outbox::Outbox`]: the broadcaster thread reads through it, writes go through its backlog | `Arc<Outbox>` held by the thread and the dispatcher; one mutex orders their writes |
//! | spare receive buffers of subscriber threads | [`broadcaster`] (a static list) | a thread borrows one while it reads and gives it back before it waits, under one mutex |
//! | connection counts, the listening socket, parked threads | [`listener::ListenerState`] | atomics; the per-address map and the parked list each under a mutex |
//! | `--author-config` rules in force | [`authorconfig::AuthorRules`] | `Arc` held by the receivers and the broker; the rules behind an `RwLock`, replaced whole on SIGHUP |
//! | counters, latency histograms, live subscriber and upstream stats | [`metrics::METRICS`] (one per process) | relaxed atomics written by the thread doing the work; the stat lists under a mutex taken at connect, disconnect and by an HTTP request to clone them |
//! | `--author-rate` buckets | [`ratelimit::RateLimiter`] in the receivers' context | one map keyed by address under a mutex; idle entries forgotten |
//!
//! ## Modules
//!
//! | concern | modules |
//! |---|---|
//! | wire and formats | [`frame`] (VTP framing), [`transport`] (Transport messages), [`xml`] (hardened parser), [`schema`] + [`xsd`] (VOEvent 2.0 validation), [`ivoid`], [`voevent`] (the event and its checks), [`testevent`] |
//! | roles, one thread each | [`receiver`] (an author), [`broadcaster`] (a subscriber), [`upstream`] (a `--remote`), `kafka` (consumer and publisher, feature `kafka`), [`dispatcher`], [`committer`], [`pruner`], [`handlers`] |
//! | what the roles share | [`listener`] (accept, caps, thread reuse), [`ratelimit`] (per-address token buckets), [`outbox`] (a subscriber's write side), [`replay`] (a subscriber's catch-up from the archive), [`verdict`] (an author's reply), [`filters`] (XPath), [`store`] (LMDB), [`archive`] (the event log's format and retention), [`archive_reader`] (queries, read-only), [`archive_filters`] (the filters as a person writes them), [`metrics`] (counters) |
//! | the operator's view | [`http`] (server, `/metrics`, `/status`, the page, `/events`) |
//! | start-up and configuration | [`broker`] (wiring and shutdown), [`args`] (how every program reads its command line), [`cli`] (bolide's options), [`siteconfig`] and [`authorconfig`] (per-network rules files, on [`netrules`]), [`whitelist`] |
//! | the operating system | [`sys`] (non-blocking I/O, deadlines, thread names, limits, the process's memory and malloc settings), [`signals`], [`time`] |
//!
//! Modules depend downwards: roles use what the roles share and the operating-system
//! layer, never each other for a helper.
//!
//! ## Why bolide parses XML itself
//!
//! VTP 2.0 deduplicates on the byte span of the root element, and hostile input must be
//! refused by limits enforced while scanning (depth, attributes, elements, no DOCTYPE),
//! before any tree grows: [`xml`] gives both, and parses a typical 4.5 KB VOEvent several
//! times faster than sxd-document and over ten times faster than xmltree (figures in
//! `tests/bench/RESULTS.md`, XML parsing). roxmltree comes closest but bounds only the
//! number of nodes; quick-xml is a tokenizer that leaves namespace and attribute
//! well-formedness to its caller, i.e. most of a parser.

pub mod archive;
pub mod archive_filters;
pub mod archive_reader;
pub mod args;
pub mod authorconfig;
pub mod broadcaster;
pub mod broker;
pub mod cli;
pub mod committer;
pub mod dispatcher;
pub mod fanout;
pub mod filters;
pub mod frame;
pub mod handlers;
pub mod http;
pub mod ivoid;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod listener;
pub mod metrics;
pub mod netrules;
pub mod outbox;
pub mod pruner;
pub mod ratelimit;
pub mod receiver;
pub mod replay;
pub mod schema;
pub mod signals;
pub mod siteconfig;
pub mod store;
pub mod sys;
#[cfg(test)]
mod test_alloc;
pub mod testevent;
pub mod time;
pub mod transport;
pub mod upstream;
pub mod verdict;
pub mod voevent;
pub mod whitelist;
pub mod xml;
pub mod xsd;
