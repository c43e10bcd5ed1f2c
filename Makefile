# bolide: build, test, install.
#   make            release build
#   make test       formatting, lints, man-page check, and every test, the Kafka gateway's
#                   too when its build dependencies are there (what CI runs)
#   make install    binaries and man pages under $(DESTDIR)$(PREFIX)
#   make bench      the benchmark matrix against bolide (tests/bench/run.sh; BENCH_* env vars)
#   make bench-compare  the same against bolide and Comet 3.1.0 side by side
#   make fuzz       cargo-fuzz every fuzz target for FUZZ_SECONDS each (not part of test)
#   make soak       a long run with misbehaving subscribers (SOAK_SECONDS, default 600)
PREFIX  ?= /usr/local
DESTDIR ?=
CARGO   ?= cargo
BINDIR   = $(DESTDIR)$(PREFIX)/bin
MANDIR   = $(DESTDIR)$(PREFIX)/share/man
UNITDIR  = $(DESTDIR)$(PREFIX)/lib/systemd/system
# /etc for a /usr install (a distribution package), $(PREFIX)/etc otherwise.
SYSCONFDIR ?= $(if $(filter /usr,$(PREFIX)),/etc,$(PREFIX)/etc)
CONFDIR  = $(DESTDIR)$(SYSCONFDIR)/bolide
BINS     = bolide bolide-send bolide-bench bolide-archive
MANPAGES = man8/bolide.8 man1/bolide-send.1 man1/bolide-bench.1 man1/bolide-archive.1
# Where `make install` takes the binaries from; NOBUILD=1 skips the release build (the
# install test points BUILT at the test build).
BUILT   ?= target/release

# The systemd unit: an unprivileged dynamic user, state in /var/lib/bolide, the usual
# hardening. Options go in $(SYSCONFDIR)/bolide/bolide.conf (one per line, spaces kept;
# installed from dist/bolide.conf, never overwritten) and, for a quick override,
# BOLIDE_OPTS in /etc/default/bolide (split on spaces; the last value of an option
# wins). bolide exits 2 on a configuration error, such as the missing --local-ivo of the
# installed file: RestartPreventExitStatus=2 keeps systemd from restarting it every 5 s.
# Reload = SIGHUP (re-reads --subscriber-config).
define SYSTEMD_UNIT
[Unit]
Description=bolide VOEvent broker (VOEvent Transport Protocol)
Documentation=man:bolide(8)
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
EnvironmentFile=-/etc/default/bolide
ExecStart=$(PREFIX)/bin/bolide --eventdb=/var/lib/bolide/eventdb --options-file=$(SYSCONFDIR)/bolide/bolide.conf $$BOLIDE_OPTS
ExecReload=/bin/kill -HUP $$MAINPID
KillSignal=SIGTERM
TimeoutStopSec=30
Restart=on-failure
RestartSec=5
RestartPreventExitStatus=2
DynamicUser=yes
StateDirectory=bolide
WorkingDirectory=/var/lib/bolide
LimitNOFILE=65536
NoNewPrivileges=yes
CapabilityBoundingSet=
AmbientCapabilities=
# The file system is read-only but for /var/lib/bolide: a --save-event-directory
# elsewhere needs ReadWritePaths=DIR (systemctl edit bolide).
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
# No MemoryDenyWriteExecute=yes: it binds --cmd children too, and breaks handlers
# written for JIT runtimes (Java, Node.js, PyPy, LuaJIT).
SystemCallArchitectures=native
SystemCallFilter=@system-service
UMask=0027

[Install]
WantedBy=multi-user.target
endef
export SYSTEMD_UNIT

.PHONY: all release run test test-kafka lint check-man install uninstall clean soak bench bench-compare fuzz

all: release

# FEATURES=kafka builds the Kafka gateway into the release (and so into `make install`).
release:
	$(CARGO) build --release --locked $(if $(FEATURES),--features $(FEATURES))

# The broker on its defaults (ports 8098/8099, event database in the per-user data dir).
run:
	$(CARGO) run --release --locked --bin bolide -- --receive --broadcast --local-ivo=ivo://example.org/broker

# Then the one test that needs an optimized build (a subscriber thread's stack budget),
# and the Kafka gateway (test-kafka).
test: lint check-man
	$(CARGO) test --locked --all-targets
	$(CARGO) test --release --locked --lib stack_budget
	$(MAKE) --no-print-directory test-kafka

# The Kafka gateway (--features kafka) builds librdkafka, which needs a C compiler, make,
# pkg-config, OpenSSL and libcurl (Debian: libssl-dev libcurl4-openssl-dev). Without them
# the Kafka tests are skipped, loudly; BOLIDE_REQUIRE_KAFKA=1 (CI) makes that a failure.
KAFKA_MISSING = $(strip \
  $(if $(shell command -v cc 2>/dev/null),,a C compiler (cc)) \
  $(if $(shell command -v make 2>/dev/null),,make) \
  $(if $(shell command -v pkg-config 2>/dev/null),,pkg-config) \
  $(if $(shell pkg-config --exists openssl 2>/dev/null && echo y),,OpenSSL headers (libssl-dev)) \
  $(if $(shell pkg-config --exists libcurl 2>/dev/null && echo y),,libcurl headers (libcurl4-openssl-dev)))

test-kafka:
ifeq ($(KAFKA_MISSING),)
	$(CARGO) clippy --locked --features kafka --all-targets -- -D warnings
	$(CARGO) test --locked --features kafka --lib kafka
	$(CARGO) test --locked --features kafka --test kafka --test cli --test docs
else
	@echo "********************************************************************"
	@echo "SKIPPED: kafka tests: missing $(KAFKA_MISSING)"
	@echo "********************************************************************"
	@if [ -n "$$BOLIDE_REQUIRE_KAFKA" ]; then echo "BOLIDE_REQUIRE_KAFKA is set: failing"; exit 1; fi
endif

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

# Long run with misbehaving subscribers; SOAK_SECONDS (default 600) and SOAK_RATE (events/s).
soak:
	$(CARGO) test --release --locked --test soak -- --ignored --nocapture

# bolide's figures (table + JSON in target/bench/); bench-compare also runs Comet 3.1.0.
bench: release
	tests/bench/run.sh

bench-compare: release
	tests/bench/run.sh compare

# Binaries, man pages and the systemd unit under $(DESTDIR)$(PREFIX).
install: $(if $(NOBUILD),,release)
	install -d $(BINDIR) $(MANDIR)/man1 $(MANDIR)/man8 $(UNITDIR) $(CONFDIR)
	for b in $(BINS); do install -m 0755 -s $(BUILT)/$$b $(BINDIR)/$$b; done
	[ -e $(CONFDIR)/bolide.conf ] || install -m 0644 dist/bolide.conf $(CONFDIR)/bolide.conf
	for m in $(MANPAGES); do install -m 0644 man/$$(basename $$m) $(MANDIR)/$$m; done
	printf '%s\n' "$$SYSTEMD_UNIT" > $(UNITDIR)/bolide.service
	chmod 0644 $(UNITDIR)/bolide.service

uninstall:
	for b in $(BINS); do rm -f $(BINDIR)/$$b; done
	for m in $(MANPAGES); do rm -f $(MANDIR)/$$m; done
	rm -f $(UNITDIR)/bolide.service

clean:
	$(CARGO) clean

# Fuzzing (tests/fuzz/README.md). cargo-fuzz needs nightly flags: RUSTC_BOOTSTRAP=1 allows them
# on the stable toolchain. Each target runs FUZZ_SECONDS from the seed corpora
# (tests/fuzz/seeds.sh, from FUZZ_SHARED); the executions and any crash are reported per
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
	tests/fuzz/seeds.sh $(FUZZ_SHARED)
	$(FUZZ_CARGO) build --fuzz-dir tests/fuzz --sanitizer=$(FUZZ_SANITIZER)
	@mkdir -p tests/fuzz/logs; fail=0; total=0; \
	for t in $(FUZZ_TARGETS); do \
	  mkdir -p tests/fuzz/artifacts/$$t; touch tests/fuzz/logs/$$t.start; \
	  echo "fuzz: $$t for $(FUZZ_SECONDS)s (log: tests/fuzz/logs/$$t.log)"; \
	  $(FUZZ_CARGO) run --fuzz-dir tests/fuzz --sanitizer=$(FUZZ_SANITIZER) $$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -timeout=$(FUZZ_TIMEOUT) -rss_limit_mb=2048 \
	    -max_len=1100000 -print_final_stats=1 $(FUZZ_FLAGS) >tests/fuzz/logs/$$t.log 2>&1; \
	  rc=$$?; \
	  execs=$$(sed -n 's/^stat::number_of_executed_units: *//p' tests/fuzz/logs/$$t.log | tail -n 1); \
	  [ -n "$$execs" ] || execs=$$(sed -n 's/^#\([0-9][0-9]*\).*/\1/p' tests/fuzz/logs/$$t.log | tail -n 1); \
	  [ -n "$$execs" ] || execs=0; \
	  found=$$(find tests/fuzz/artifacts/$$t -type f -newer tests/fuzz/logs/$$t.start | wc -l); \
	  corpus=$$(ls tests/fuzz/corpus/$$t | wc -l); \
	  total=$$((total + execs)); \
	  if [ $$rc -ne 0 ] || [ $$found -ne 0 ]; then \
	    fail=1; echo "fuzz: $$t: $$execs executions, CRASH (exit $$rc, $$found new in tests/fuzz/artifacts/$$t), corpus $$corpus"; \
	    grep -m 3 -E "panicked at|^[^ ]+:[0-9]+:[0-9]+:$$|ERROR: libFuzzer|SUMMARY" tests/fuzz/logs/$$t.log | sed 's/^/    /'; \
	  else \
	    echo "fuzz: $$t: $$execs executions, no crash, corpus $$corpus"; \
	  fi; \
	done; \
	echo "fuzz: total $$total executions"; \
	exit $$fail
