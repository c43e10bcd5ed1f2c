//! `bolide-archive`: read the archive of a bolide event database ([`bolide::archive`]):
//! list the events it holds, print one, export them as files, count them. It reads
//! through [`ArchiveReader`] (LMDB read transactions only, no lock), so it runs beside the
//! broker without slowing it.
//!
//! Listings and exports read in chunks, each in its own short read transaction, and
//! write a chunk out only once its transaction is over: a reader that held one
//! transaction while its output waited (on a pager, a full pipe, a slow disk) would keep
//! the broker from reusing every page freed since the transaction began.
//!
//! Exit status: 0 on success (a closed output pipe included); 1 when the database is
//! missing, foreign or unreadable, `show` finds no such event, or the output cannot be
//! written; 2 for a usage error (bad option, time, role or XPath).

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use argh::FromArgs;
use bolide::archive::Entry;
use bolide::archive_filters::{FilterError, Filters};
use bolide::archive_reader::{ArchiveReader, EntryJson, Query, ReadError, StatsJson};

const NAME: &str = "bolide-archive";
/// Bytes copied out per read transaction: a chunk ends once it holds this much. Large,
/// because an ivorn-prefix query collects its stream's seqs again for every chunk; yet
/// half a million lines of `list`, read in well under a second.
const CHUNK_BYTES: usize = 64 << 20;

/// Query the archive of events a bolide broker accepted; safe while the broker runs.
#[derive(FromArgs)]
struct Args {
    /// directory of the event database (default: the broker's, $XDG_DATA_HOME/bolide/eventdb,
    /// else ~/.local/share/bolide/eventdb)
    #[argh(option)]
    eventdb: Option<PathBuf>,
    /// print the version and exit
    #[argh(switch)]
    version: bool,
    #[argh(subcommand)]
    command: Option<Command>,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Command {
    List(ListArgs),
    Show(ShowArgs),
    Export(ExportArgs),
    Stats(StatsArgs),
}

/// Declare a subcommand's options: the filters every selecting command shares (argh has
/// no flattening), then its own.
macro_rules! with_filters {
    ($(#[$attr:meta])* struct $name:ident { $($own:tt)* }) => {
        #[derive(FromArgs)]
        $(#[$attr])*
        struct $name {
            /// accepted at or after T: ISO 8601 UTC (2026-12-05T12:00:00Z, 2026-12-05) or
            /// an age (90s, 90m, 6h, 7d: that long ago)
            #[argh(option)]
            since: Option<String>,
            /// accepted before T (same forms)
            #[argh(option)]
            until: Option<String>,
            /// when Who/Date is at or after T (same forms)
            #[argh(option)]
            authored_since: Option<String>,
            /// when Who/Date is before T (same forms)
            #[argh(option)]
            authored_until: Option<String>,
            /// ivorn starts with P, e.g. ivo://nasa.gsfc.gcn/SWIFT# (repeatable: any of them)
            #[argh(option)]
            ivorn_prefix: Vec<String>,
            /// ivorn contains S
            #[argh(option)]
            ivorn_contains: Option<String>,
            /// role: observation, prediction, utility or test
            #[argh(option)]
            role: Option<String>,
            /// XPath 1.0 expression the event matches, as in subscriber filters
            #[argh(option)]
            xpath: Option<String>,
            $($own)*
        }

        impl $name {
            fn filters(&self) -> Filters<'_> {
                Filters {
                    since: self.since.as_deref(),
                    until: self.until.as_deref(),
                    authored_since: self.authored_since.as_deref(),
                    authored_until: self.authored_until.as_deref(),
                    ivorn_prefixes: &self.ivorn_prefix,
                    ivorn_contains: self.ivorn_contains.as_deref(),
                    role: self.role.as_deref(),
                    xpath: self.xpath.as_deref(),
                }
            }
        }
    };
}

with_filters! {
    /// One line per event, oldest first: acceptance time, role, size, ivorn.
    #[argh(subcommand, name = "list")]
    struct ListArgs {
        /// at most N events
        #[argh(option)]
        limit: Option<usize>,
        /// newest first
        #[argh(switch)]
        reverse: bool,
        /// one JSON object per line instead
        #[argh(switch)]
        json: bool,
    }
}

with_filters! {
    /// Write the selected events to DIR as --save-event names them, never overwriting.
    #[argh(subcommand, name = "export")]
    struct ExportArgs {
        /// directory to write to (created if missing)
        #[argh(option)]
        dir: PathBuf,
    }
}

/// Print the exact bytes of the newest event with this ivorn.
#[derive(FromArgs)]
#[argh(subcommand, name = "show")]
struct ShowArgs {
    /// the event's ivorn
    #[argh(positional)]
    ivorn: String,
}

/// Count the events per stream and per role, and in all.
#[derive(FromArgs)]
#[argh(subcommand, name = "stats")]
struct StatsArgs {
    /// one JSON object instead
    #[argh(switch)]
    json: bool,
}

impl From<FilterError> for Fail {
    fn from(e: FilterError) -> Fail {
        Fail::Usage(e.as_option())
    }
}

/// Why a command failed, by exit status.
enum Fail {
    /// Exit 2: the command line.
    Usage(String),
    /// Exit 1: the database, or what was asked of it.
    Db(String),
    /// Exit 1, or 0 for a closed pipe: the output.
    Write(io::Error),
}

impl From<ReadError> for Fail {
    fn from(e: ReadError) -> Fail {
        match e {
            ReadError::XPath { .. } => Fail::Usage(e.to_string()),
            e => Fail::Db(e.to_string()),
        }
    }
}

impl From<io::Error> for Fail {
    fn from(e: io::Error) -> Fail {
        Fail::Write(e)
    }
}

fn main() -> ExitCode {
    let args = match bolide::args::parse_env::<Args>(NAME) {
        Ok(a) => a,
        Err(code) => return code,
    };
    if args.version {
        println!("{NAME} {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail::Usage(msg)) => {
            eprintln!("{NAME}: {msg}");
            ExitCode::from(2)
        }
        Err(Fail::Db(msg)) => {
            eprintln!("{NAME}: {msg}");
            ExitCode::from(1)
        }
        // `bolide-archive list | head`: the reader has seen enough.
        Err(Fail::Write(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(Fail::Write(e)) => {
            eprintln!("{NAME}: cannot write the output: {e}");
            ExitCode::from(1)
        }
    }
}

/// A command, checked and ready to run.
enum Plan {
    List { q: Query, json: bool },
    Export { q: Query, dir: PathBuf },
    Show { ivorn: String },
    Stats { json: bool },
}

fn run(args: Args) -> Result<(), Fail> {
    let Some(command) = args.command else {
        return Err(Fail::Usage(
            "give a command: list, show, export or stats (see --help)".to_string(),
        ));
    };
    // The command line is checked before the database is opened.
    let now_ms = bolide::time::unix_now_ms();
    let plan = match command {
        Command::List(a) => Plan::List {
            q: Query {
                limit: a.limit,
                reverse: a.reverse,
                // A listing shows metadata only.
                without_bytes: true,
                ..a.filters().query(now_ms)?
            },
            json: a.json,
        },
        Command::Export(a) => Plan::Export {
            q: a.filters().query(now_ms)?,
            dir: a.dir,
        },
        Command::Show(a) => Plan::Show { ivorn: a.ivorn },
        Command::Stats(a) => Plan::Stats { json: a.json },
    };
    let db = args
        .eventdb
        .or_else(bolide::cli::default_eventdb)
        .ok_or_else(|| {
            Fail::Usage("give --eventdb: neither XDG_DATA_HOME nor HOME is set".to_string())
        })?;
    let reader = ArchiveReader::open(&db)?;
    let mut out = io::stdout().lock();
    match plan {
        Plan::List { q, json } => list(&reader, &q, json, &mut out),
        Plan::Export { q, dir } => {
            let n = export(&reader, &q, &dir)?;
            writeln!(out, "exported {n} events to {}", dir.display())?;
            Ok(())
        }
        Plan::Show { ivorn } => match reader.newest_bytes(&ivorn)? {
            Some(bytes) => {
                out.write_all(&bytes)?;
                Ok(out.flush()?)
            }
            None => Err(Fail::Db(format!(
                "no archived event has the ivorn '{ivorn}' (in {})",
                db.display()
            ))),
        },
        Plan::Stats { json } => stats(&reader, json, &mut out),
    }
}

/// Visit what `q` selects in chunks, each read in its own read transaction: `take` copies
/// an entry into `buf` (returning how many bytes it kept), a chunk ends once they add up
/// to `chunk_bytes`, and `drain` uses the copies once that transaction is over. The
/// number of entries.
fn chunked<B>(
    reader: &ArchiveReader,
    q: &Query,
    chunk_bytes: usize,
    buf: &mut B,
    mut take: impl FnMut(&mut B, &Entry<'_>) -> usize,
    mut drain: impl FnMut(&mut B) -> Result<(), Fail>,
) -> Result<usize, Fail> {
    let mut q = q.clone();
    let mut left = q.limit.take().unwrap_or(usize::MAX);
    let mut total = 0;
    while left > 0 {
        let (mut n, mut bytes, mut last, mut full) = (0, 0, None, false);
        reader.query(&q, |e| {
            bytes += take(buf, e);
            n += 1;
            last = Some(e.seq);
            full = n >= left || bytes >= chunk_bytes;
            !full
        })?;
        drain(buf)?;
        total += n;
        left -= n;
        match last {
            // The chunk stopped short of the end: the next one resumes after it.
            Some(seq) if full => {
                if q.reverse {
                    q.before_seq = Some(seq);
                } else {
                    q.after_seq = Some(seq);
                }
            }
            _ => break,
        }
    }
    Ok(total)
}

fn list(reader: &ArchiveReader, q: &Query, json: bool, out: &mut impl Write) -> Result<(), Fail> {
    let mut text = Vec::new();
    let mut stamp = Stamp::default();
    chunked(
        reader,
        q,
        CHUNK_BYTES,
        &mut text,
        |text, e| {
            let at = text.len();
            if json {
                serde_json::to_writer(&mut *text, &EntryJson::new(e)).expect("writes to memory");
                text.push(b'\n');
            } else {
                stamp.write(e.accepted_ms, text);
                // Writing to a Vec cannot fail.
                let _ = writeln!(text, " {} {} {}", e.role.as_str(), e.size, e.ivorn);
            }
            text.len() - at
        },
        |text| {
            out.write_all(text)?;
            text.clear();
            Ok(())
        },
    )?;
    Ok(out.flush()?)
}

/// Acceptance times as [`bolide::time::utc_timestamp_ms`] writes them, the part up to the second kept
/// from the entry before: consecutive entries mostly share their second, and formatting
/// a date costs more than the rest of a line.
#[derive(Default)]
struct Stamp {
    secs: Option<u64>,
    text: String,
}

impl Stamp {
    fn write(&mut self, ms: u64, out: &mut Vec<u8>) {
        let secs = ms / 1000;
        if self.secs != Some(secs) {
            // `YYYY-MM-DDThh:mm:ssZ` without its `Z`.
            self.text = bolide::time::utc_timestamp(secs);
            self.text.pop();
            self.secs = Some(secs);
        }
        out.extend_from_slice(self.text.as_bytes());
        let _ = write!(out, ".{:03}Z", ms % 1000);
    }
}

/// Write each selected event to `dir` under `--save-event`'s name for it, never
/// overwriting (a taken name gets `_` appended); the number written.
fn export(reader: &ArchiveReader, q: &Query, dir: &Path) -> Result<usize, Fail> {
    let cannot = |e: io::Error| Fail::Db(format!("cannot write to {}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(cannot)?;
    let mut events: Vec<(String, Vec<u8>)> = Vec::new();
    chunked(
        reader,
        q,
        CHUNK_BYTES,
        &mut events,
        |events, e| {
            events.push((bolide::handlers::file_name(e.ivorn), e.bytes.to_vec()));
            e.bytes.len()
        },
        |events| {
            for (name, bytes) in events.drain(..) {
                bolide::handlers::save(dir, &name, &bytes).map_err(cannot)?;
            }
            Ok(())
        },
    )
}

fn stats(reader: &ArchiveReader, json: bool, out: &mut impl Write) -> Result<(), Fail> {
    let s = reader.stats()?;
    let id = reader.identity()?;
    if json {
        serde_json::to_writer(&mut *out, &StatsJson::new(&s, id)).map_err(io::Error::from)?;
        writeln!(out)?;
        return Ok(out.flush()?);
    }
    let j = StatsJson::new(&s, id);
    writeln!(out, "archive {}", j.archive_id)?;
    writeln!(out, "total {} events {} bytes", j.count, j.bytes)?;
    if let (Some(oldest), Some(newest)) = (&j.oldest, &j.newest) {
        writeln!(out, "oldest {oldest}")?;
        writeln!(out, "newest {newest}")?;
    }
    for (role, n) in j.roles {
        writeln!(out, "role {role} {n}")?;
    }
    for (name, st) in &j.streams {
        writeln!(out, "stream {name} {} {} {}", st.count, st.first, st.last)?;
    }
    Ok(out.flush()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bolide::store::{Store, StoreConfig};
    use bolide::voevent::{Event, Origin};

    /// Read in chunks of one entry each, every chunk resuming after the one before, a
    /// listing is the one a single transaction gives: in both orders, with and without an
    /// ivorn prefix, with and without a limit.
    #[test]
    fn chunks_resume_where_they_stopped() {
        let dir =
            std::env::temp_dir().join(format!("bolide-archive-chunks-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let events: Vec<Event> = (0..40)
            .map(|i| {
                let ivorn = format!("ivo://x.y/{}#{i}", ["a", "b", "c"][i % 3]);
                let xml = format!("<VOEvent ivorn=\"{ivorn}\" role=\"test\"/>");
                let doc = bolide::xml::parse(xml.as_bytes(), Default::default()).unwrap();
                let from = Origin::Author("127.0.0.1:9".parse().unwrap());
                Event::new(
                    xml.as_bytes(),
                    ivorn,
                    bolide::voevent::EventRole::Test,
                    doc.root_span.clone(),
                    from,
                )
            })
            .collect();
        {
            let store = Store::open(&StoreConfig::new(&dir)).unwrap();
            let rows: Vec<_> = events.iter().map(|e| (e.key, 1)).collect();
            store
                .insert_batch(&rows, &events.iter().collect::<Vec<_>>())
                .unwrap();
        }
        let reader = ArchiveReader::open(&dir).unwrap();
        for reverse in [false, true] {
            for prefixes in [vec![], vec!["ivo://x.y/b#".to_string()]] {
                for limit in [None, Some(5)] {
                    let q = Query {
                        ivorn_prefixes: prefixes.clone(),
                        reverse,
                        limit,
                        ..Query::default()
                    };
                    let mut whole = Vec::new();
                    reader
                        .query(&q, |e| {
                            whole.push(e.seq);
                            true
                        })
                        .unwrap();
                    assert!(whole.len() >= 5);
                    let (mut got, mut chunks) = (Vec::new(), 0);
                    let n = chunked(
                        &reader,
                        &q,
                        1,
                        &mut got,
                        |got, e| {
                            got.push(e.seq);
                            1
                        },
                        |_| {
                            chunks += 1;
                            Ok(())
                        },
                    )
                    .unwrap_or_else(|_| panic!("chunked failed"));
                    let what = format!("reverse {reverse}, prefixes {prefixes:?}, limit {limit:?}");
                    assert_eq!(got, whole, "{what}");
                    assert_eq!(n, whole.len(), "{what}");
                    assert!(chunks >= whole.len(), "{what}: {chunks} chunks");
                }
            }
        }
        drop(reader);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
