# SPDX-License-Identifier: MIT
# One plain Makefile. `make V=1` shows the commands; `make SAN=1 ...` builds
# with ASan + UBSan into build-san/.

CC ?= cc
ifeq ($(SAN),1)
BUILD ?= build-san
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer \
	    -fno-sanitize-recover=undefined
else
BUILD ?= build
SANFLAGS :=
endif

OPT ?= -O2
CFLAGS ?= $(OPT) -g
CFLAGS += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wshadow -Wno-unused-parameter \
	  -fno-omit-frame-pointer -fPIC -Iinclude -Isrc -MMD -MP $(SANFLAGS)
LDFLAGS += $(SANFLAGS)
LDLIBS := -luring -lsodium

ifeq ($(V),1)
Q :=
else
Q := @
endif

LIB_SRC := $(wildcard src/*.c)
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
CLI_SRC := $(wildcard tools/*.c)
CLI_OBJ := $(CLI_SRC:%.c=$(BUILD)/obj/%.o)
TEST_SRC := $(wildcard tests/test_*.c)
TEST_BIN := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
TEST_LIB_SRC := $(wildcard tests/lib/*.c)
TEST_LIB_OBJ := $(TEST_LIB_SRC:%.c=$(BUILD)/obj/%.o)
# Helpers of the fault tests and the soak (tests/fault/): processes, not
# test programs.
FAULT_SRC := $(wildcard tests/fault/*.c)
FAULT_BIN := $(FAULT_SRC:tests/%.c=$(BUILD)/tests/%)
BENCH_SRC := $(wildcard bench/*.c)
BENCH_BIN := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)

all: $(BUILD)/libpairmesh.a $(BUILD)/libpairmesh.so $(BUILD)/pairmesh \
     $(BENCH_BIN)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	@[ -n "$(Q)" ] && echo "  CC      $<" || true
	$(Q)$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/libpairmesh.a: $(LIB_OBJ)
	@[ -n "$(Q)" ] && echo "  AR      $@" || true
	$(Q)rm -f $@ && ar rcs $@ $^

$(BUILD)/libpairmesh.so: $(LIB_OBJ)
	@[ -n "$(Q)" ] && echo "  LD      $@" || true
	$(Q)$(CC) -shared -Wl,-soname,libpairmesh.so.0 $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/pairmesh: $(CLI_OBJ) $(BUILD)/libpairmesh.a
	@[ -n "$(Q)" ] && echo "  LD      $@" || true
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# testlib is an archive so a test pulls it in only if it uses it: the
# engine test supplies its own core_complete and must not drag node.o in.
$(BUILD)/libtestlib.a: $(TEST_LIB_OBJ)
	$(Q)rm -f $@ && ar rcs $@ $^

$(BUILD)/tests/%: $(BUILD)/obj/tests/%.o $(BUILD)/libtestlib.a $(BUILD)/libpairmesh.a
	@mkdir -p $(dir $@)
	@[ -n "$(Q)" ] && echo "  LD      $@" || true
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) -lcmocka

$(BUILD)/bench/%: $(BUILD)/obj/bench/%.o $(BUILD)/libpairmesh.a
	@mkdir -p $(dir $@)
	@[ -n "$(Q)" ] && echo "  LD      $@" || true
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# Installs the Debian packages the build and tests need, only when missing.
DEB_PKGS := liburing-dev libcmocka-dev libsodium-dev iproute2 gcc make
deps:
	@missing=""; for p in $(DEB_PKGS); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | \
			grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
			$$missing >/dev/null; \
	fi

tests: $(TEST_BIN) $(BUILD)/pairmesh $(FAULT_BIN)

# Every test program runs; the summary line counts programs.
test: deps
	$(Q)$(MAKE) --no-print-directory tests
	$(Q)BUILD=$(BUILD) sh tests/run.sh $(TEST_BIN)

# The fault tests (tests/fault/): resets, packet loss, link cuts, a relay
# killed, floods, a peer that stops reading; ~1.5 min, some need root
# (they skip without it). CI runs it after make test.
#
# FAULT_XFAIL: scenarios (NAME or NAME/ENGINE) whose failure is reported as
# known and does not fail the run, only while their bug is open:
#  relay: routed messages a killed relay held are lost (no end-to-end
#         ack yet; docs/PROTOCOL.md 11.7); goes when routed sessions land.
#  reset, netloss: a resumed stream is sometimes closed as a protocol
#         error: the peer's first ACK on the new connection covers bytes
#         sent on the old one that are not re-sent yet (peer_acked: done >
#         tx_sent), and the stream's unacknowledged messages are lost.
#         Seen mostly with epoll, once with io_uring (in the soak).
FAULT_XFAIL ?= relay reset netloss
fault: deps
	$(Q)$(MAKE) --no-print-directory tests
	$(Q)BUILD=$(BUILD) FAULT_XFAIL="$(FAULT_XFAIL)" bash tests/fault/run.sh

# The soak: 8 nodes under random faults for SOAK_SECONDS (default 600),
# then a report. Not in CI. Results: RELIABILITY.md.
soak: deps
	$(Q)$(MAKE) --no-print-directory tests
	$(Q)BUILD=$(BUILD) bash tests/fault/soak.sh

test-san:
	$(Q)$(MAKE) --no-print-directory SAN=1 test

demo: deps
	$(Q)$(MAKE) --no-print-directory all
	$(Q)BUILD=$(BUILD) sh tools/demo.sh

bench-first: deps
	$(Q)$(MAKE) --no-print-directory all
	$(Q)$(BUILD)/bench/throughput

# The programs pairmesh is compared with (bench/peers/) need ZeroMQ and
# NNG: built only for benchmarking, never by `make` or `make test`.
PEER_SRC := $(wildcard bench/peers/*.c)
PEER_BIN := $(PEER_SRC:bench/peers/%.c=$(BUILD)/bench/peers/%)
BENCH_PKGS := iperf3 libzmq3-dev libnng-dev linux-perf

bench-deps: deps
	@missing=""; for p in $(BENCH_PKGS); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | \
			grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
			$$missing >/dev/null; \
	fi

$(BUILD)/bench/peers/%: bench/peers/%.c
	@mkdir -p $(dir $@)
	@[ -n "$(Q)" ] && echo "  CC      $<" || true
	$(Q)$(CC) $(OPT) -g -std=c11 -D_GNU_SOURCE -Wall -Wextra -o $@ $< \
		-lzmq -lnng -lpthread

bench-peers: bench-deps $(PEER_BIN)

# Runs pairmesh and its peers side by side and rewrites PERF.md's results.
bench: bench-deps
	$(Q)$(MAKE) --no-print-directory all bench-peers
	$(Q)BUILD=$(BUILD) sh bench/run.sh

bench-quick: bench-deps
	$(Q)$(MAKE) --no-print-directory all bench-peers
	$(Q)BUILD=$(BUILD) QUICK=1 sh bench/run.sh

# make flamegraph SCENARIO=throughput ARGS="--size 64"
flamegraph: bench-deps
	$(Q)$(MAKE) --no-print-directory all OPT="-O2 -fno-omit-frame-pointer"
	$(Q)BUILD=$(BUILD) sh tools/flamegraph.sh $(or $(SCENARIO),throughput) $(ARGS)

clean:
	rm -rf build build-san

.PHONY: all deps tests test fault soak test-san demo bench-first bench-deps bench-peers \
	bench bench-quick flamegraph clean
.SECONDARY:

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)

# ---- fuzz: libFuzzer targets (tests/fuzz/) --------------------------------
# make fuzz FUZZ_SECONDS=60 runs each target that long on a copy of its seeds
# and regressions (build/fuzz/corpus/<target>: the committed corpus stays
# clean); make fuzz-ci (CI) runs each for FUZZ_CI_SECONDS with a fixed seed,
# so a CI failure replays. Either fails if a target crashes, hangs or breaks
# an invariant; the input lands in build/fuzz/artifacts/. The inputs under
# tests/fuzz/known-failures/ (open bugs) are never copied in.
FUZZ_SECONDS ?= 60
FUZZ_CI_SECONDS ?= 15
FUZZ_CI_SEED ?= 1
# Targets whose failure fuzz-ci reports but does not fail on: only while a
# finding of theirs is open (tests/fuzz/known-failures/README.md). Empty
# it to make every target gate CI again.
FUZZ_CI_XFAIL ?= fuzz_session
FUZZ_CC := clang-14
FUZZ_DIR := build/fuzz
FUZZ_FLAGS := -fsanitize=fuzzer,address,undefined -g -O1 -std=c11 \
	      -D_GNU_SOURCE -Wall -Wextra -Wshadow -Wno-unused-parameter \
	      -Iinclude -Isrc -MMD -MP
FUZZ_TARGETS := $(patsubst tests/fuzz/%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_BIN := $(FUZZ_TARGETS:%=$(FUZZ_DIR)/%)
FUZZ_LIB_OBJ := $(LIB_SRC:%.c=$(FUZZ_DIR)/obj/%.o)
FUZZ_PKGS := clang-14 libfuzzer-14-dev libclang-rt-14-dev

$(FUZZ_DIR)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	@[ -n "$(Q)" ] && echo "  FUZZCC  $<" || true
	$(Q)$(FUZZ_CC) $(FUZZ_FLAGS) -c -o $@ $<

$(FUZZ_DIR)/fuzz_%: $(FUZZ_DIR)/obj/tests/fuzz/fuzz_%.o $(FUZZ_LIB_OBJ)
	@[ -n "$(Q)" ] && echo "  FUZZLD  $@" || true
	$(Q)$(FUZZ_CC) -fsanitize=fuzzer,address,undefined -o $@ $^ $(LDLIBS)

# Installs what is missing (as `make deps` does), builds, then runs every
# target even after one fails, and fails at the end if any did.
# $(1): seconds per target, $(2): extra flags, $(3): targets whose failure
# is reported as known and does not fail the run.
define fuzz_run
	@missing=""; for p in $(FUZZ_PKGS); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | \
			grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
			$$missing >/dev/null; \
	fi
	$(Q)$(MAKE) --no-print-directory $(FUZZ_BIN)
	$(Q)failed=""; for t in $(FUZZ_TARGETS); do \
		c=$(FUZZ_DIR)/corpus/$$t; a=$(FUZZ_DIR)/artifacts/$$t; \
		rm -rf $$c && mkdir -p $$c $$a && \
		cp tests/fuzz/corpus/$$t/* $$c/ && \
		{ [ ! -d tests/fuzz/regressions/$$t ] || \
		  cp tests/fuzz/regressions/$$t/* $$c/; } || exit 1; \
		echo "=== $$t: $(1) s $(2)"; \
		$(FUZZ_DIR)/$$t -max_total_time=$(1) -timeout=30 $(2) \
			-print_final_stats=1 -artifact_prefix=$$a/ $$c \
			> $(FUZZ_DIR)/$$t.log 2>&1; \
		st=$$?; \
		grep -a "DONE\|stat::number_of_executed\|stat::average_exec" \
			$(FUZZ_DIR)/$$t.log | tail -n 3; \
		if [ $$st -ne 0 ]; then \
			grep -a -m 3 "fuzz check failed\|ERROR: \|SUMMARY" \
				$(FUZZ_DIR)/$$t.log; \
			echo "$$t failed: see $(FUZZ_DIR)/$$t.log and $$a/"; \
			case " $(3) " in \
			*" $$t "*) echo "$$t: KNOWN FAILING, not gating" \
				"(open bugs: tests/fuzz/known-failures/)";; \
			*) failed="$$failed $$t";; \
			esac; \
		fi; \
	done; \
	[ -z "$$failed" ] || { echo "fuzz targets failed:$$failed"; exit 1; }
endef

fuzz: deps
	$(call fuzz_run,$(FUZZ_SECONDS))

fuzz-ci: deps
	$(call fuzz_run,$(FUZZ_CI_SECONDS),-seed=$(FUZZ_CI_SEED),$(FUZZ_CI_XFAIL))

.PHONY: fuzz fuzz-ci
-include $(shell find $(FUZZ_DIR) -name '*.d' 2>/dev/null)
# ---- end of fuzz ----------------------------------------------------------
