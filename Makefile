# bolide: build, test, install.
#   make            release build
#   make test       formatting, lints, man-page check, and every test (what CI runs)
#   make install    binaries and man pages under $(DESTDIR)$(PREFIX)
#   make fuzz       cargo-fuzz every fuzz target for FUZZ_SECONDS each (not part of test)
PREFIX  ?= /usr/local
DESTDIR ?=
CARGO   ?= cargo
BINDIR   = $(DESTDIR)$(PREFIX)/bin
MANDIR   = $(DESTDIR)$(PREFIX)/share/man
BINS     = bolide bolide-send

.PHONY: all release run test lint check-man install uninstall clean fuzz

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

install: release
	install -d $(BINDIR) $(MANDIR)/man1 $(MANDIR)/man8
	for b in $(BINS); do install -m 0755 target/release/$$b $(BINDIR)/$$b; done
	install -m 0644 man/bolide.8 $(MANDIR)/man8/bolide.8
	install -m 0644 man/bolide-send.1 $(MANDIR)/man1/bolide-send.1

uninstall:
	for b in $(BINS); do rm -f $(BINDIR)/$$b; done
	rm -f $(MANDIR)/man8/bolide.8 $(MANDIR)/man1/bolide-send.1

clean:
	$(CARGO) clean

# Fuzzing (fuzz/README.md). cargo-fuzz needs nightly flags: RUSTC_BOOTSTRAP=1 allows them
# on the stable toolchain. Each target runs FUZZ_SECONDS from the seed corpora
# (fuzz/seeds.sh, from FUZZ_SHARED); the executions and any crash are reported per
# target, and the rule fails if any target crashed, hung or ran out of memory.
# FUZZ_FLAGS adds libFuzzer options, e.g. FUZZ_FLAGS="-fork=2 -ignore_crashes=1" to keep
# going past a known crash; FUZZ_SANITIZER=none if ASan is unavailable.
FUZZ_SECONDS   ?= 60
FUZZ_TARGETS   ?= frame transport xml voevent
FUZZ_SHARED    ?= $(CURDIR)/../shared/voevents
FUZZ_TIMEOUT   ?= 10
FUZZ_SANITIZER ?= address
FUZZ_FLAGS     ?=
FUZZ_CARGO      = RUSTC_BOOTSTRAP=1 $(CARGO) fuzz

fuzz:
	@$(CARGO) fuzz --version >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked
	fuzz/seeds.sh $(FUZZ_SHARED)
	$(FUZZ_CARGO) build --sanitizer=$(FUZZ_SANITIZER)
	@mkdir -p fuzz/logs; fail=0; total=0; \
	for t in $(FUZZ_TARGETS); do \
	  mkdir -p fuzz/artifacts/$$t; touch fuzz/logs/$$t.start; \
	  echo "fuzz: $$t for $(FUZZ_SECONDS)s (log: fuzz/logs/$$t.log)"; \
	  $(FUZZ_CARGO) run --sanitizer=$(FUZZ_SANITIZER) $$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -timeout=$(FUZZ_TIMEOUT) -rss_limit_mb=2048 \
	    -max_len=1100000 -print_final_stats=1 $(FUZZ_FLAGS) >fuzz/logs/$$t.log 2>&1; \
	  rc=$$?; \
	  execs=$$(sed -n 's/^stat::number_of_executed_units: *//p' fuzz/logs/$$t.log | tail -n 1); \
	  [ -n "$$execs" ] || execs=$$(sed -n 's/^#\([0-9][0-9]*\).*/\1/p' fuzz/logs/$$t.log | tail -n 1); \
	  [ -n "$$execs" ] || execs=0; \
	  found=$$(find fuzz/artifacts/$$t -type f -newer fuzz/logs/$$t.start | wc -l); \
	  corpus=$$(ls fuzz/corpus/$$t | wc -l); \
	  total=$$((total + execs)); \
	  if [ $$rc -ne 0 ] || [ $$found -ne 0 ]; then \
	    fail=1; echo "fuzz: $$t: $$execs executions, CRASH (exit $$rc, $$found new in fuzz/artifacts/$$t), corpus $$corpus"; \
	    grep -m 3 -E "panicked at|^[^ ]+:[0-9]+:[0-9]+:$$|ERROR: libFuzzer|SUMMARY" fuzz/logs/$$t.log | sed 's/^/    /'; \
	  else \
	    echo "fuzz: $$t: $$execs executions, no crash, corpus $$corpus"; \
	  fi; \
	done; \
	echo "fuzz: total $$total executions"; \
	exit $$fail
