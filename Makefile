# bolide: build, test, install.
#   make            release build
#   make test       formatting, lints, man-page check, and every test (what CI runs)
#   make install    binaries and man pages under $(DESTDIR)$(PREFIX)
#   make bench      the benchmark matrix against bolide (bench/run.sh; BENCH_* env vars)
#   make bench-compare  the same against bolide and Comet 3.1.0 side by side
PREFIX  ?= /usr/local
DESTDIR ?=
CARGO   ?= cargo
BINDIR   = $(DESTDIR)$(PREFIX)/bin
MANDIR   = $(DESTDIR)$(PREFIX)/share/man
BINS     = bolide bolide-send bolide-bench

.PHONY: all release run test lint check-man install uninstall clean bench bench-compare

all: release

release:
	$(CARGO) build --release --locked

# The broker on its defaults (ports 8098/8099, event database in the per-user data dir).
run:
	$(CARGO) run --release --locked --bin bolide -- --receive --broadcast --local-ivo=ivo://example.org/broker

test: lint check-man
	$(CARGO) test --locked --all-targets

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

# Every man page must render without a single groff warning.
check-man:
	@for m in man/*.[0-9]; do \
	  out=$$(groff -man -ww -z "$$m" 2>&1); \
	  if [ -n "$$out" ]; then echo "$$m:"; echo "$$out"; exit 1; fi; \
	  echo "$$m: renders cleanly"; \
	done

bench: release
	bench/run.sh

bench-compare: release
	bench/run.sh compare

install: release
	install -d $(BINDIR) $(MANDIR)/man1 $(MANDIR)/man8
	for b in $(BINS); do install -m 0755 target/release/$$b $(BINDIR)/$$b; done
	install -m 0644 man/bolide.8 $(MANDIR)/man8/bolide.8
	install -m 0644 man/bolide-send.1 $(MANDIR)/man1/bolide-send.1
	install -m 0644 man/bolide-bench.1 $(MANDIR)/man1/bolide-bench.1

uninstall:
	for b in $(BINS); do rm -f $(BINDIR)/$$b; done
	rm -f $(MANDIR)/man8/bolide.8 $(MANDIR)/man1/bolide-send.1 $(MANDIR)/man1/bolide-bench.1

clean:
	$(CARGO) clean
