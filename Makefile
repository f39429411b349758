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

tests: $(TEST_BIN) $(BUILD)/pairmesh

# Every test program runs; the summary line counts programs.
test: deps
	$(Q)$(MAKE) --no-print-directory tests
	$(Q)BUILD=$(BUILD) sh tests/run.sh $(TEST_BIN)

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

.PHONY: all deps tests test test-san demo bench-first bench-deps bench-peers \
	bench bench-quick flamegraph clean
.SECONDARY:

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
