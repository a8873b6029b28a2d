# Makefile - builds and checks kho (GNU make 4).
#
#   make                 build everything whose sources exist (all)
#   make test            the full gate that CI runs (.ci/run)
#   make sim SEED=n      replay one simulator seed with a trace
#   make sim-soak SECONDS=n   sweep simulator seeds for n seconds
#   make sim-planted     prove the simulator catches each planted raft bug
#   make fuzz            run every libFuzzer target for FUZZ_SECONDS each
#   make bench           kho against etcd on this machine (bench/README.md)
#   make fmt             clang-format every .c/.h in place
#   make clean           remove build/
#
# Sources are found by wildcard, so adding a .c file to an existing folder
# never needs an edit here. Everything built lands in build/:
#
#   build/bin/       normal build (-O2)      build/obj/     its objects
#   build/asan/      ASan+UBSan build        build/planted/ -DKHO_PLANTED_BUGS
#   build/fuzz/      libFuzzer build (clang) build/gen/     protoc-c output
#   build/lib/       static libraries
#
# V=1 shows the full commands.

.DEFAULT_GOAL := all
.DELETE_ON_ERROR:
.SUFFIXES:
MAKEFLAGS += --no-builtin-rules

# --- Tools and knobs -------------------------------------------------------

CC := cc
FUZZ_CC := clang
PROTOC_C := protoc-c
CLANG_FORMAT := clang-format

SIM_SEEDS ?= 2000
ASAN_SIM_SEEDS ?= 200
PLANTED_SEEDS ?= 3000
FUZZ_SECONDS ?= 30
SECONDS ?= 600
SEED ?=

ifeq ($(V),1)
Q :=
else
Q := @
endif

# Assigned, not ?=, so a CFLAGS left in the environment cannot drop -Werror;
# `make CFLAGS=...` on the command line still overrides.
CFLAGS = -std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -Werror -Wshadow \
	-Wstrict-prototypes -Wmissing-prototypes -Wno-unused-parameter \
	-fvisibility=hidden
CPPFLAGS = -I. -Ibuild/gen -MMD -MP
LDLIBS = -lm
TEST_LDLIBS = -lcmocka -lprotobuf-c -llmdb -lnng -lpthread -lm

ASAN_FLAGS = -O1 -fsanitize=address,undefined -fno-omit-frame-pointer \
	-fno-sanitize-recover=all
PLANTED_FLAGS = -DKHO_PLANTED_BUGS
FUZZ_CFLAGS = -O1 -fsanitize=fuzzer-no-link,address,undefined \
	-fno-omit-frame-pointer -fno-sanitize-recover=all
FUZZ_LDFLAGS = -fsanitize=fuzzer,address,undefined

# Sanitizer runs fail loudly and at once, with a stack for UBSan findings.
SAN_ENV = ASAN_OPTIONS=abort_on_error=1:detect_leaks=1 \
	LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp:print_suppressions=0 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

# --- Build dependencies ----------------------------------------------------

# Debian names: LMDB's pkg-config module is `lmdb`; libnng-dev ships no .pc
# file, so its header is probed through the compiler instead.
DEPS_CHECK = command -v pkg-config >/dev/null 2>&1 && \
	pkg-config --exists lmdb libprotobuf-c liburcu cmocka && \
	command -v $(PROTOC_C) >/dev/null 2>&1 && \
	echo '\#include <nng/nng.h>' | $(CC) -E -x c - >/dev/null 2>&1

# Every object and generated file waits (order-only) for this stamp, so a
# fresh Debian box installs its packages before the first compile. The stamp
# is remade when install-deps.sh changes, and then the script runs again so
# that newly listed packages get installed.
DEPS_STAMP := build/.deps-ok

$(DEPS_STAMP): scripts/install-deps.sh
	$(Q)if [ -f $@ ] || ! { $(DEPS_CHECK); }; then \
		echo "deps: running scripts/install-deps.sh"; \
		scripts/install-deps.sh; \
	fi
	$(Q)if ! { $(DEPS_CHECK); }; then \
		echo "deps: lmdb, nng, protobuf-c (and protoc-c), liburcu or" \
			"cmocka still missing; see scripts/install-deps.sh" >&2; \
		exit 1; \
	fi
	$(Q)mkdir -p $(@D) && touch $@

# --- Sources ---------------------------------------------------------------

RAFT_SRC = $(wildcard server/raft/*.c)
STORE_SRC = $(wildcard server/store/*.c)
COMMON_SRC = client/kho_err.c
HARNESS_SRC = $(wildcard tests/harness/*.c)
SIM_SRC = $(wildcard tests/sim/*.c)
SCEN_SRC = $(wildcard tests/scenarios/*.c)
SCEN_TXT = $(wildcard tests/scenarios/*.txt)
UNIT_SRC = $(wildcard tests/unit/test_*.c)
FUZZ_SRC = $(wildcard tests/fuzz/*.c)
PROTO_SRC = $(wildcard proto/*.proto)

CODEC_SRC = server/transport/raft_codec.c build/gen/proto/raft.pb-c.c

UNIT_NAMES = $(notdir $(UNIT_SRC:.c=))
FUZZ_NAMES = $(notdir $(FUZZ_SRC:.c=))

SIM_LINK_SRC = $(SIM_SRC) $(HARNESS_SRC) $(RAFT_SRC) $(COMMON_SRC)
SCEN_LINK_SRC = $(SCEN_SRC) $(HARNESS_SRC) $(RAFT_SRC) $(COMMON_SRC)
FUZZ_LINK_SRC = $(CODEC_SRC) $(RAFT_SRC) $(COMMON_SRC)

# What a unit test links besides its own file. A test may narrow this with
# <test>_LINK_SRC: test_codec does, so the codec's tests never wait on the
# raft core compiling.
UNIT_LINK_SRC = $(RAFT_SRC) $(STORE_SRC) $(COMMON_SRC) $(HARNESS_SRC) $(CODEC_SRC)
test_codec_LINK_SRC = $(CODEC_SRC) $(COMMON_SRC)
# test_libkho runs libkho against fake nodes on inproc:// (hence -lnng).
test_libkho_LINK_SRC = client/libkho.c $(COMMON_SRC) build/gen/proto/api.pb-c.c
test_snapxfer_LINK_SRC = server/node/snapxfer.c server/common/log.c \
	server/store/crc32c.c $(CODEC_SRC) $(RAFT_SRC) $(COMMON_SRC)
# test_hist checks khobench's latency histogram, which needs nothing else.
test_hist_LINK_SRC = bench/hist.c $(COMMON_SRC)
# test_http checks /ready's verdict, answer buffers and metric counters.
test_http_LINK_SRC = server/http/ready.c server/http/buf.c \
	server/common/metrics.c $(RAFT_SRC) $(COMMON_SRC)
unit_link_src = $(if $(value $(1)_LINK_SRC),$($(1)_LINK_SRC),$(UNIT_LINK_SRC))


# objs(variant-dir, sources): where a variant keeps the objects of sources.
# Generated sources map build/gen/x.c -> <variant>/obj/gen/x.o.
objs = $(patsubst %.c,$(1)/obj/%.o,$(patsubst build/gen/%,gen/%,$(2)))

# --- Rules shared by every variant -----------------------------------------

build/gen/%.pb-c.c build/gen/%.pb-c.h: %.proto | $(DEPS_STAMP)
	@echo "  PROTOC  $<"
	$(Q)mkdir -p build/gen
	$(Q)$(PROTOC_C) -I. --c_out=build/gen $<

# variant(dir, compiler, compile-flags, link-flags): object, codec and
# binary rules for one build variant.
define variant
$(1)/obj/%.o: %.c | $(DEPS_STAMP)
	@echo "  CC      $$@"
	$(Q)mkdir -p $$(@D)
	$(Q)$(2) $$(CPPFLAGS) $$(CFLAGS) $(3) -c $$< -o $$@

$(1)/obj/gen/%.o: build/gen/%.c | $(DEPS_STAMP)
	@echo "  CC      $$@"
	$(Q)mkdir -p $$(@D)
	$(Q)$(2) $$(CPPFLAGS) $$(CFLAGS) $(3) -c $$< -o $$@

# The codec includes the generated header, which -MMD only learns about
# after the first compile.
$(1)/obj/server/transport/raft_codec.o: build/gen/proto/raft.pb-c.h

$(1)/bin/khosim: $$(call objs,$(1),$$(SIM_LINK_SRC))
	@echo "  LD      $$@"
	$(Q)mkdir -p $$(@D)
	$(Q)$(2) $$(CFLAGS) $(3) $(4) $$^ $$(LDLIBS) -o $$@

$(1)/bin/khoscen: $$(call objs,$(1),$$(SCEN_LINK_SRC))
	@echo "  LD      $$@"
	$(Q)mkdir -p $$(@D)
	$(Q)$(2) $$(CFLAGS) $(3) $(4) $$^ $$(LDLIBS) -o $$@

ALL_OBJS += $$(call objs,$(1),$$(SIM_LINK_SRC) $$(SCEN_LINK_SRC) \
	$$(UNIT_SRC) $$(UNIT_LINK_SRC) $$(FUZZ_SRC))
endef

# unit_test(dir, compiler, compile-flags, link-flags, name)
define unit_test
$(1)/bin/$(5): $(1)/obj/tests/unit/$(5).o $(call objs,$(1),$(call unit_link_src,$(5)))
	@echo "  LD      $$@"
	$(Q)mkdir -p $$(@D)
	$(Q)$(2) $$(CFLAGS) $(3) $(4) $$^ $$(TEST_LDLIBS) -o $$@
endef

# fuzz_target(name)
define fuzz_target
build/fuzz/bin/$(1): build/fuzz/obj/tests/fuzz/$(1).o $(call objs,build/fuzz,$(FUZZ_LINK_SRC))
	@echo "  LD      $$@"
	$(Q)mkdir -p $$(@D)
	$(Q)$(FUZZ_CC) $$(CFLAGS) $(FUZZ_CFLAGS) $(FUZZ_LDFLAGS) $$^ -lprotobuf-c -lm -o $$@
endef

$(eval $(call variant,build,$$(CC),,))
$(eval $(call variant,build/asan,$$(CC),$$(ASAN_FLAGS),$$(ASAN_FLAGS)))
$(eval $(call variant,build/planted,$$(CC),$$(PLANTED_FLAGS),))
$(eval $(call variant,build/fuzz,$$(FUZZ_CC),$$(FUZZ_CFLAGS),))
$(foreach t,$(UNIT_NAMES),\
	$(eval $(call unit_test,build,$$(CC),,,$(t)))\
	$(eval $(call unit_test,build/asan,$$(CC),$$(ASAN_FLAGS),$$(ASAN_FLAGS),$(t))))
$(foreach f,$(FUZZ_NAMES),$(eval $(call fuzz_target,$(f))))

# --- khod, libkho, khoctl ----------------------------------------------------

API_GEN = build/gen/proto/api.pb-c.c
KHOD_SRC = server/main.c $(wildcard server/node/*.c server/api/*.c \
	server/common/*.c server/http/*.c) \
	$(filter-out server/transport/raft_codec.c,$(wildcard server/transport/*.c)) \
	$(RAFT_SRC) $(STORE_SRC) $(CODEC_SRC) $(COMMON_SRC) $(API_GEN) \
	client/libkho.c
LIBKHO_SRC = client/libkho.c $(COMMON_SRC) $(API_GEN)
KHOD_LDLIBS = -lnng -llmdb -lprotobuf-c -linih -lurcu-bp -lurcu-common -lpthread -lm
LIBKHO_LDLIBS = -lnng -lprotobuf-c -lpthread

# These include the generated api header, which -MMD only learns about
# after the first compile.
build/obj/server/api/api.o build/obj/client/libkho.o \
build/pic/obj/client/libkho.o build/asan/obj/client/libkho.o \
build/obj/tests/unit/test_libkho.o \
build/asan/obj/tests/unit/test_libkho.o build/asan/obj/server/api/api.o \
build/obj/server/http/prom.o build/asan/obj/server/http/prom.o \
build/obj/tests/integration/khocheck.o: build/gen/proto/api.pb-c.h

build/bin/khod: $(call objs,build,$(KHOD_SRC))
	@echo "  LD      $@"
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(CFLAGS) $^ $(KHOD_LDLIBS) -o $@

# khod under ASan+UBSan, for the integration tests of `make test-asan`.
build/asan/bin/khod: $(call objs,build/asan,$(KHOD_SRC))
	@echo "  LD      $@"
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(CFLAGS) $(ASAN_FLAGS) $^ $(KHOD_LDLIBS) -o $@

# libkho.so is built from position-independent objects of its own.
build/pic/obj/%.o: %.c | $(DEPS_STAMP)
	@echo "  CC      $@"
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) -fPIC -c $< -o $@

build/pic/obj/gen/%.o: build/gen/%.c | $(DEPS_STAMP)
	@echo "  CC      $@"
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) -fPIC -c $< -o $@

build/lib/libkho.a: $(call objs,build,$(LIBKHO_SRC))

build/lib/libkho.so: $(call objs,build/pic,$(LIBKHO_SRC))
	@echo "  LD      $@"
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) -shared -Wl,-soname,libkho.so.0 $^ $(LIBKHO_LDLIBS) -o $@

build/lib/pkgconfig/kho.pc: Makefile
	$(Q)mkdir -p $(@D)
	$(Q)printf 'prefix=/usr/local\nincludedir=$${prefix}/include\nlibdir=$${prefix}/lib\n\nName: kho\nDescription: client library of the kho registry database\nVersion: 0.1.0\nRequires.private: libprotobuf-c\nLibs: -L$${libdir} -lkho\nLibs.private: -lnng -lpthread\nCflags: -I$${includedir}\n' > $@

# khoctl: the command plus its helpers (client/ctl_*.c), never in libkho.
KHOCTL_SRC = client/khoctl.c $(wildcard client/ctl_*.c)
build/bin/khoctl: $(call objs,build,$(KHOCTL_SRC)) build/lib/libkho.a
	@echo "  LD      $@"
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(CFLAGS) $^ $(LIBKHO_LDLIBS) -ljansson -o $@

build/bin/khocheck: build/obj/tests/integration/khocheck.o build/lib/libkho.a
	@echo "  LD      $@"
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(CFLAGS) $^ $(LIBKHO_LDLIBS) -o $@

# khobench: the load generator (bench/*.c), a libkho user like khoctl.
KHOBENCH_SRC = $(wildcard bench/*.c)
build/bin/khobench: $(call objs,build,$(KHOBENCH_SRC)) build/lib/libkho.a
	@echo "  LD      $@"
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(CFLAGS) $^ $(LIBKHO_LDLIBS) -lm -o $@

ALL_OBJS += $(call objs,build/asan,$(KHOD_SRC) $(KHOBENCH_SRC))
ALL_OBJS += $(call objs,build,$(KHOD_SRC) $(LIBKHO_SRC) $(KHOCTL_SRC) \
	tests/integration/khocheck.c $(KHOBENCH_SRC)) \
	$(call objs,build/pic,$(LIBKHO_SRC))
KHO_PROGS = build/bin/khod build/bin/khoctl build/bin/khocheck \
	build/bin/khobench build/lib/libkho.a \
	build/lib/libkho.so build/lib/pkgconfig/kho.pc

-include $(sort $(ALL_OBJS:.o=.d))

# --- Libraries ---------------------------------------------------------------

# The raft core and the codec as archives, for khod and for out-of-tree
# tools; the test binaries link objects directly.
build/lib/libkhoraft.a: $(call objs,build,$(RAFT_SRC) $(COMMON_SRC))
build/lib/libkhocodec.a: $(call objs,build,$(CODEC_SRC) $(COMMON_SRC))
build/lib/%.a:
	@echo "  AR      $@"
	$(Q)mkdir -p $(@D)
	$(Q)rm -f $@ && ar rcs $@ $^

# --- What exists gets built --------------------------------------------------

UNIT_BINS = $(UNIT_NAMES:%=build/bin/%)
ASAN_UNIT_BINS = $(UNIT_NAMES:%=build/asan/bin/%)
FUZZ_BINS = $(FUZZ_NAMES:%=build/fuzz/bin/%)
LIBS = build/lib/libkhocodec.a $(if $(RAFT_SRC),build/lib/libkhoraft.a)
SIM_BIN = $(if $(SIM_SRC),build/bin/khosim)
SCEN_BIN = $(if $(SCEN_SRC),build/bin/khoscen)

.PHONY: all asan planted
all: $(SIM_BIN) $(SCEN_BIN) $(UNIT_BINS) $(LIBS) $(KHO_PROGS)
asan: $(if $(SIM_SRC),build/asan/bin/khosim) $(ASAN_UNIT_BINS)
planted: build/planted/bin/khosim

# --- make test ----------------------------------------------------------------

# Each step is its own make run so the steps happen in this order and stop
# at the first failure, while each step's build still runs in parallel.
.PHONY: test test-layers test-unit test-scen test-sim test-asan \
	test-integration
test:
	$(Q)$(MAKE) --no-print-directory test-layers
	$(Q)$(MAKE) --no-print-directory test-unit
	$(Q)$(MAKE) --no-print-directory test-integration
	$(Q)$(MAKE) --no-print-directory test-scen
	$(Q)$(MAKE) --no-print-directory test-sim
	$(Q)$(MAKE) --no-print-directory test-asan
	$(Q)$(MAKE) --no-print-directory sim-planted
	@echo "==> test: all steps passed"

banner = @echo; echo "==> $(1)"

test-layers:
	$(call banner,layers: scripts/check-layers.sh)
	$(Q)scripts/check-layers.sh

test-unit: $(UNIT_BINS)
	$(call banner,unit tests: $(words $(UNIT_BINS)) binaries (normal build))
	$(Q)for t in $(UNIT_BINS); do \
		echo "--- $$t"; $$t || { echo "FAILED: $$t" >&2; exit 1; }; \
	done

test-integration: build/bin/khod build/bin/khoctl build/bin/khocheck
	$(call banner,integration: tests/integration/*.sh (real processes))
	$(Q)for t in tests/integration/*.sh; do \
		echo "--- $$t"; $$t || { echo "FAILED: $$t" >&2; exit 1; }; \
	done

test-scen: $(SCEN_BIN)
	$(call banner,scenarios: tests/scenarios/*.txt)
ifneq ($(SCEN_BIN),)
	$(Q)build/bin/khoscen $(SCEN_TXT)
else
	@echo "skipped: tests/scenarios has no .c sources yet"
endif

test-sim: $(SIM_BIN)
	$(call banner,simulator: $(SIM_SEEDS) seeds (normal build))
ifneq ($(SIM_BIN),)
	$(Q)build/bin/khosim --seeds $(SIM_SEEDS)
	$(call banner,simulator: regression seeds (tests/sim/regression-seeds))
	$(Q)for s in $$(grep -o '^[0-9]*' tests/sim/regression-seeds); do \
		build/bin/khosim --seed $$s >/dev/null || exit 1; \
	done; echo "regression seeds ok"
else
	@echo "skipped: tests/sim has no sources yet"
endif

test-asan: asan build/asan/bin/khod build/bin/khoctl build/bin/khocheck
	$(call banner,unit tests: $(words $(ASAN_UNIT_BINS)) binaries (ASan+UBSan))
	$(Q)for t in $(ASAN_UNIT_BINS); do \
		echo "--- $$t"; \
		$(SAN_ENV) $$t || { echo "FAILED: $$t" >&2; exit 1; }; \
	done
	$(call banner,integration: tests/integration/*.sh with khod under ASan+UBSan)
	$(Q)for t in tests/integration/*.sh; do \
		echo "--- $$t"; \
		$(SAN_ENV) KHOD=$(CURDIR)/build/asan/bin/khod $$t || \
			{ echo "FAILED: $$t (ASan khod)" >&2; exit 1; }; \
	done
	$(call banner,simulator: $(ASAN_SIM_SEEDS) seeds (ASan+UBSan))
ifneq ($(SIM_SRC),)
	$(Q)$(SAN_ENV) build/asan/bin/khosim --seeds $(ASAN_SIM_SEEDS)
else
	@echo "skipped: tests/sim has no sources yet"
endif

# --- Simulator -------------------------------------------------------------

.PHONY: sim sim-soak sim-planted
ifneq ($(filter sim,$(MAKECMDGOALS)),)
ifeq ($(SEED),)
$(error usage: make sim SEED=n)
endif
endif

sim: build/bin/khosim
	build/bin/khosim --seed $(SEED) --trace

sim-soak: build/bin/khosim
	build/bin/khosim --seconds $(SECONDS)

sim-planted: $(if $(SIM_SRC),build/planted/bin/khosim)
	$(call banner,planted bugs: each must be caught within $(PLANTED_SEEDS) seeds)
ifneq ($(SIM_SRC),)
	$(Q)PLANTED_SEEDS=$(PLANTED_SEEDS) KHOSIM=build/planted/bin/khosim \
		scripts/sim-planted.sh
else
	@echo "skipped: tests/sim has no sources yet"
endif

# --- Fuzzing -----------------------------------------------------------------

# Each target keeps its growing corpus in build/fuzz/corpus/<name>/; seeds
# checked in under tests/fuzz/corpus/<name>/ are read as well.
.PHONY: fuzz fuzz-build
fuzz-build: $(FUZZ_BINS)

fuzz: fuzz-build
	$(Q)for f in $(FUZZ_NAMES); do \
		echo; echo "==> fuzz: $$f for $(FUZZ_SECONDS) s"; \
		mkdir -p build/fuzz/corpus/$$f; \
		seeds=""; \
		if [ -d tests/fuzz/corpus/$$f ]; then seeds=tests/fuzz/corpus/$$f; fi; \
		$(SAN_ENV) build/fuzz/bin/$$f -max_total_time=$(FUZZ_SECONDS) \
			-print_final_stats=1 build/fuzz/corpus/$$f $$seeds \
			|| exit 1; \
	done

# --- Housekeeping ------------------------------------------------------------

FMT_FILES = $(shell find . \( -path ./build -o -path ./.git \) -prune -o \
	-type f \( -name '*.c' -o -name '*.h' \) -print)

.PHONY: fmt fmt-check clean run
fmt:
	$(Q)$(CLANG_FORMAT) -i $(FMT_FILES)

# Lists files whose formatting differs, without changing them.
fmt-check:
	$(Q)$(CLANG_FORMAT) --dry-run -Werror $(FMT_FILES)

clean:
	rm -rf build

# A 3-node cluster in the foreground with a demo registry; Ctrl-C stops it.
# RUN_DIR keeps the data between runs (default build/run).
RUN_DIR ?= build/run
run: build/bin/khod build/bin/khoctl
	$(Q)scripts/run-demo.sh $(RUN_DIR)

# kho side by side with etcd 3.4 on this machine (scripts/bench-vs-etcd.sh,
# bench/README.md): a benchmark, never part of `make test`.
.PHONY: bench
bench: build/bin/khod build/bin/khoctl build/bin/khobench
	$(Q)scripts/bench-vs-etcd.sh
