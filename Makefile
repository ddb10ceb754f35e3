# mtbert — build, test and demo.
#
#   make            build every stage into bin/ (probes printed first); with nvcc also the CUDA
#                   backend, build/libmtbert_cuda.so, which the programs load only for a GPU run
#   make test       install deps if missing, build, run every C unit test and bats suite
#   make demo       install deps, build, fetch the default model, run a real pipeline
#   make asan       build everything with AddressSanitizer + UBSan into build-asan/
#   make model      fetch all-MiniLM-L6-v2 into models/all-MiniLM-L6-v2
#   make deps       apt-get the libraries that are missing (needs root)
#   make install    the programs into PREFIX/bin (default /usr/local), the CUDA backend into
#                   PREFIX/lib/mtbert

SHELL := /bin/bash
CC    ?= cc
BUILD ?= build
BIN   ?= bin

# -Wno-psabi: lib/cpu passes GCC vector types between static inline functions only, so the
# AVX-vs-SSE calling convention GCC warns about (builds without -march=native) never matters
CFLAGS_BASE := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wno-unused-parameter -Wno-psabi -Ilib -Ilib/cpu
OPT         ?= -O3 -march=native -fno-math-errno
CFLAGS      ?= $(OPT) -g
LDLIBS      := -lz -lm

# ---- feature probes -------------------------------------------------------
probe = $(shell $(CC) tools/probe/$(1).c -o /dev/null $(2) >/dev/null 2>&1 && echo 1)

HAVE_ZLIB     := $(call probe,zlib,-lz)
HAVE_UTF8PROC := $(call probe,utf8proc,-lutf8proc)
HAVE_OPENBLAS := $(if $(NO_BLAS),,$(call probe,openblas,-lopenblas))
HAVE_OPENMP   := $(call probe,openmp,-fopenmp)
NVCC          ?= $(shell command -v nvcc 2>/dev/null)
CUDA_HOME     ?= $(if $(NVCC),$(patsubst %/bin/nvcc,%,$(NVCC)),)

ifeq ($(HAVE_OPENBLAS),1)
  CFLAGS_BASE += -DMT_HAVE_OPENBLAS
  LDLIBS      += -lopenblas
endif
ifeq ($(HAVE_OPENMP),1)
  CFLAGS_BASE += -fopenmp
  LDLIBS      += -fopenmp
endif
ifeq ($(HAVE_UTF8PROC),1)
  LDLIBS      += -lutf8proc
endif

ALL_CFLAGS := $(CFLAGS_BASE) $(CFLAGS)

# ---- sources --------------------------------------------------------------
LIB_SRC   := $(wildcard lib/*.c lib/cpu/*.c)
LIB_OBJ   := $(LIB_SRC:%.c=$(BUILD)/%.o)
TOOLS     := $(patsubst %/main.c,%,$(wildcard */main.c))
TOOL_BINS := $(TOOLS:%=$(BIN)/%)
UNIT_SRC  := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
# small programs that only the tests use (e.g. synthetic stream generators)
TEST_TOOL_SRC := $(wildcard tests/tools/*.c)
TEST_TOOLS    := $(TEST_TOOL_SRC:tests/tools/%.c=$(BUILD)/tests/tools/%)

CU_SRC    := $(wildcard kernels/*.cu)
CU_OBJ    := $(CU_SRC:%.cu=$(BUILD)/%.o)
NVCCFLAGS ?= -O3 -std=c++17 -Ilib -arch=sm_90 -Xcompiler -Wall,-Wextra
# The CUDA backend is a shared object, $(BUILD)/libmtbert_cuda.so (kernels/ + cuBLAS, cuBLASLt,
# cudart), that lib/device.c opens with dlopen only when a run asks for a GPU: a CPU run, or
# auto on a machine without the NVIDIA driver, loads none of it. The programs link no CUDA
# library; they export the few lib/ functions the .so calls (kernels/host_symbols.list).
ifneq ($(NVCC),)
ifneq ($(CU_SRC),)
  CUDA_SO        := $(BUILD)/libmtbert_cuda.so
  CUDA_RT_LINK   := -L$(CUDA_HOME)/lib64 -lcublasLt -lcublas -lcudart -lstdc++ -lm -Wl,-rpath,$(CUDA_HOME)/lib64
  HOST_SYMS      := $(shell sed -n 's/^ *\(mt_[A-Za-z0-9_]*\);$$/\1/p' kernels/host_symbols.list)
  CUDA_HOST_LINK := -Wl,--dynamic-list=kernels/host_symbols.list
  LDLIBS         += -ldl  # lib/device.c's dlopen (part of libc since glibc 2.34)
  # op_parity calls the CUDA launchers directly, so it links kernels/ in (the static library)
  CUDA_STATIC    := $(BUILD)/libmtbert_cuda.a
  ALL_CFLAGS += -DMT_HAVE_CUDA
  # the GPU check's programs: built by `make` too, so every CUDA build proves they link
  GPU_CHECK_BINS := $(BUILD)/gpu/op_parity $(BUILD)/gpu/test_device $(BUILD)/gpu/train_check
endif
endif
# tests/emu: kernel source run on the CPU (tests/emu/cuda_emu.h) — needs the CUDA headers, not
# a GPU. EMU_CUDA_HOME survives `make asan`, which builds without nvcc.
EMU_CUDA_HOME ?= $(CUDA_HOME)
ifneq ($(wildcard $(EMU_CUDA_HOME)/include/cuda_runtime.h),)
  EMU_TESTS := $(patsubst tests/emu/%.cpp,$(BUILD)/tests/%,$(wildcard tests/emu/test_*.cpp))
endif
EMU_CXXFLAGS := -std=c++17 $(OPT) -g -Wall -Wextra -Wno-unused-parameter -Wno-unknown-pragmas \
                -Itests/emu/include -I$(EMU_CUDA_HOME)/include -Ilib -Ikernels -Itests/unit -Itests/emu -I$(BUILD)/emu
# what the GPU check links: the CPU backend and device selection only, so it builds where
# zlib / utf8proc / BLAS development files are missing (NO_BLAS=1 on the GPU machine)
GPU_CHECK_OBJ := $(addprefix $(BUILD)/lib/,common.o device.o rng.o sentence.o cpu/gemm.o cpu/ops.o cpu/backward.o cpu/optim.o cpu/sentence.o cpu/staged.o profile.o workspace.o)
GPU_CHECK_LIBS := $(filter-out -lz -lutf8proc,$(LDLIBS))

.PHONY: all probes deps model demo test unit bats asan install clean distclean bench gpu-check-build
all: probes $(TOOL_BINS) $(UNIT_BINS) $(TEST_TOOLS) $(GPU_CHECK_BINS) $(EMU_TESTS)

probes:
	@mark() { if [ "$$1" = 1 ]; then printf '  \033[32m✓\033[0m %s\n' "$$2"; else printf '  \033[31m✗\033[0m %s\n' "$$2"; fi; }; \
	echo "mtbert build probes:"; \
	mark "$(HAVE_ZLIB)" "zlib (required)"; \
	mark "$(HAVE_UTF8PROC)" "utf8proc (required by tokenize)"; \
	mark "$(HAVE_OPENBLAS)" "OpenBLAS $(if $(HAVE_OPENBLAS),,— using the plain-C GEMM fallback)"; \
	mark "$(HAVE_OPENMP)" "OpenMP $(if $(HAVE_OPENMP),,— single-threaded)"; \
	mark "$(if $(NVCC),1,)" "nvcc $(if $(NVCC),$(NVCC) — building kernels/ (sm_90),— CPU backend only)"; \
	mark "$(if $(EMU_TESTS),1,)" "CUDA headers $(if $(EMU_TESTS),— kernels/ also tested on the CPU emulator (tests/emu),— no emulator tests (tests/emu skipped))"; \
	if [ "$(HAVE_ZLIB)" != 1 ] || [ "$(HAVE_UTF8PROC)" != 1 ]; then echo "missing required libraries: run 'make deps'" >&2; exit 1; fi

$(BUILD)/%.o: %.c $(wildcard lib/*.h lib/cpu/*.h)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(BUILD)/libmtbert.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

# -fPIC: the same objects go into the shared object and op_parity's static library
$(BUILD)/kernels/%.o: kernels/%.cu $(wildcard kernels/*.cuh lib/*.h)
	@mkdir -p $(@D)
	$(NVCC) $(NVCCFLAGS) -Xcompiler -fPIC -c $< -o $@

$(BUILD)/libmtbert_cuda.a: $(CU_OBJ)
	@rm -f $@
	ar rcs $@ $^

# Its mt_ symbols come from the program that loads it: refuse one the list does not export.
$(BUILD)/libmtbert_cuda.so: $(CU_OBJ) kernels/host_symbols.list
	$(CC) -shared -Wl,-soname,libmtbert_cuda.so $(CU_OBJ) $(CUDA_RT_LINK) -o $@
	@missing=$$(nm -D --undefined-only $@ | awk '$$2 ~ /^mt_/ {print $$2}' | grep -vxF -f <(printf '%s\n' $(HOST_SYMS))); \
	if [ -n "$$missing" ]; then echo "$@ needs lib/ functions missing from kernels/host_symbols.list:" $$missing >&2; rm -f $@; exit 1; fi

$(BIN)/%: $(BUILD)/%/main.o $(BUILD)/libmtbert.a $(CUDA_SO)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $< $(CUDA_HOST_LINK) $(BUILD)/libmtbert.a $(LDLIBS) -o $@

$(BUILD)/tests/tools/%: tests/tools/%.c $(BUILD)/libmtbert.a
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $< $(BUILD)/libmtbert.a $(LDLIBS) -o $@

$(BUILD)/tests/%: tests/unit/%.c tests/unit/check.h tests/unit/rand.h $(BUILD)/libmtbert.a $(CUDA_SO)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -Itests/unit $< $(CUDA_HOST_LINK) $(BUILD)/libmtbert.a $(LDLIBS) -o $@

# kernels/X.cu with its launch syntax and shared memory (dynamic and static) rewritten for tests/emu/cuda_emu.h;
# a construct the rewrite missed fails here, not as a compiler error in the test
$(BUILD)/emu/%.emu.cpp: kernels/%.cu
	@mkdir -p $(@D)
	sed -E -e 's/([A-Za-z_][A-Za-z0-9_]*(<[^;]*>)?)<<<([^;]*)>>>\(/mt_emu::launch(\1, \3)(/' \
	  -e 's/extern __shared__ __align__\(([0-9]+)\) unsigned char ([A-Za-z_][A-Za-z0-9_]*)\[\];/unsigned char *\2 = mt_emu::dynamic_smem(\1);/' \
	  -e 's/__shared__ ([A-Za-z_][A-Za-z0-9_]*) ([A-Za-z_][A-Za-z0-9_]*)((\[[^]]*\])+);/auto \&\2 = mt_emu::block_shared<\1\3>([] {});/' \
	  $< > $@.tmp
	@if grep -n '<<<\|__shared__' $@.tmp; then echo "$<: launch or shared-memory syntax the emulator's rewrite does not know (above)" >&2; rm -f $@.tmp; exit 1; fi
	@mv $@.tmp $@

$(BUILD)/tests/test_%_emu: tests/emu/test_%_emu.cpp tests/emu/cuda_emu.h tests/emu/backend_glue.h tests/emu/parity.h $(wildcard tests/emu/include/cub/*/*.cuh) $(BUILD)/emu/%.emu.cpp tests/unit/check.h tests/unit/rand.h $(wildcard kernels/*.cuh lib/*.h) $(BUILD)/libmtbert.a
	@mkdir -p $(@D)
	$(CXX) $(EMU_CXXFLAGS) $< $(BUILD)/libmtbert.a $(LDLIBS) -o $@

# The whole CUDA backend on the emulator (tests/emu/test_backend_emu): every kernel file but gemm.cu,
# one object each (their internal names stay apart), and tests/emu/gemm_standin.cpp for gemm.cu.
EMU_BACKEND_OBJ := $(addprefix $(BUILD)/emu/,$(addsuffix .emu.o,ops attention flash backward sentence optim backend_cuda) gemm_standin.o)
EMU_DEPS := tests/emu/cuda_emu.h $(wildcard tests/emu/include/cub/*/*.cuh) $(wildcard kernels/*.cuh lib/*.h)

$(BUILD)/emu/%.emu.o: $(BUILD)/emu/%.emu.cpp $(EMU_DEPS)
	$(CXX) $(EMU_CXXFLAGS) -include tests/emu/cuda_emu.h -c $< -o $@

$(BUILD)/emu/gemm_standin.o: tests/emu/gemm_standin.cpp $(EMU_DEPS)
	@mkdir -p $(@D)
	$(CXX) $(EMU_CXXFLAGS) -include tests/emu/cuda_emu.h -c $< -o $@

$(BUILD)/tests/test_backend_emu: tests/emu/test_backend_emu.cpp $(EMU_BACKEND_OBJ) tests/unit/check.h tests/emu/parity.h tests/gpu/train_parity.h $(BUILD)/libmtbert.a
	@mkdir -p $(@D)
	$(CXX) $(EMU_CXXFLAGS) $< $(EMU_BACKEND_OBJ) $(BUILD)/libmtbert.a $(LDLIBS) -o $@

# tests/gpu/check.sh builds these alone (make NO_BLAS=1 BUILD=build-gpu gpu-check-build)
gpu-check-build: $(if $(GPU_CHECK_BINS),$(GPU_CHECK_BINS),gpu-check-needs-nvcc)
gpu-check-needs-nvcc:
	@echo "gpu-check-build: nvcc not found (set NVCC=/path/to/nvcc)" >&2; exit 1

# train_check and test_device load the .so as the programs do (from $(BUILD)/gpu: its parent)
$(BUILD)/gpu/train_check: tests/gpu/train_check.c tests/gpu/train_parity.h $(BUILD)/libmtbert.a $(CUDA_SO)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $< $(CUDA_HOST_LINK) $(BUILD)/libmtbert.a $(LDLIBS) -o $@

$(BUILD)/gpu/op_parity: tests/gpu/op_parity.c tests/unit/rand.h $(GPU_CHECK_OBJ) $(CUDA_STATIC)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -Itests/unit $< $(GPU_CHECK_OBJ) $(CUDA_STATIC) $(CUDA_RT_LINK) $(GPU_CHECK_LIBS) -o $@

$(BUILD)/gpu/test_device: tests/unit/test_device.c tests/unit/check.h $(GPU_CHECK_OBJ) $(CUDA_SO)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -Itests/unit $< $(CUDA_HOST_LINK) $(GPU_CHECK_OBJ) $(GPU_CHECK_LIBS) -o $@

# ---- set-up ----------------------------------------------------------------
deps:
	@./tools/install-deps.sh

MODEL_DIR := models/all-MiniLM-L6-v2
model: $(MODEL_DIR)/model.safetensors
$(MODEL_DIR)/model.safetensors:
	@./tools/fetch-model.sh $(MODEL_DIR)

# ---- tests -------------------------------------------------------------------
test: deps
	@$(MAKE) --no-print-directory all asan
	@$(MAKE) --no-print-directory model
	@./tests/run.sh

asan:
	@$(MAKE) --no-print-directory BUILD=build-asan BIN=build-asan/bin \
	  OPT="-O1 -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
	  NVCC= EMU_CUDA_HOME=$(CUDA_HOME) $(addprefix build-asan/bin/,$(TOOLS)) $(UNIT_SRC:tests/unit/%.c=build-asan/tests/%) \
	  $(patsubst $(BUILD)/%,build-asan/%,$(EMU_TESTS))

demo: deps
	@$(MAKE) --no-print-directory all model
	@./pipelines/demo.sh

# developer benchmarks against PyTorch on this machine (need pip torch + transformers)
bench: all model
	@./bench/tokenize.sh && ./bench/embed.sh && ./bench/encoder_step.sh

# make install [PREFIX=/usr/local] [DESTDIR=...]: the programs into PREFIX/bin and, when built,
# the CUDA backend into PREFIX/lib/mtbert, where lib/device.c looks for it (bin/../lib/mtbert)
PREFIX ?= /usr/local
install: $(TOOL_BINS) $(CUDA_SO)
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 755 $(TOOL_BINS) $(DESTDIR)$(PREFIX)/bin
	$(if $(CUDA_SO),install -d $(DESTDIR)$(PREFIX)/lib/mtbert && install -m 755 $(CUDA_SO) $(DESTDIR)$(PREFIX)/lib/mtbert)

clean:
	rm -rf $(BUILD) build-asan $(BIN)
distclean: clean
	rm -rf models runs

.SECONDARY:
