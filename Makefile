# nanokoel pipeline. Every stage is a real CLI; targets are files, so re-running skips what is up to date
# and an interrupted stage resumes from its last checkpoint.
#
#   make codec tokenize lm      train codec -> tokenize corpus -> train LM   (PROFILE=cpu by default)
#   make app                    Gradio demo
#   make test                   the test suite
#
# PROFILE picks the scale of every stage: quick (whole pipeline in ~20 min on 2 cores),
# cpu (default: the best this CPU can train in a few hours), gpu (about an hour of codec training and a
# matching LM on one modern GPU), paper (paper-scale configs for many GPUs).
PROFILE ?= cpu
RUNS    ?= runs
PY      := .venv/bin/python
SETUP   := .venv/.nanokoel-installed

# per-profile settings
CORPUS_quick := quick
CORPUS_cpu   := cpu
CORPUS_gpu   := cpu
CORPUS_paper := cpu
CODEC_CONFIG_quick := configs/codec/quick_12.5fps.yaml
CODEC_CONFIG_cpu   := configs/codec/cpu_12.5fps.yaml
CODEC_CONFIG_gpu   := configs/codec/gpu_12.5fps.yaml
CODEC_CONFIG_paper := configs/codec/nanocodec_12.5fps_1.1kbps.yaml
BASE_CONFIG_quick  := configs/codec/quick_21.5fps.yaml
BASE_CONFIG_cpu    := configs/codec/cpu_21.5fps.yaml
BASE_CONFIG_gpu    := configs/codec/gpu_21.5fps.yaml
BASE_CONFIG_paper  := configs/codec/nanocodec_21.5fps_1.89kbps.yaml
LM_CONFIG_quick    := configs/lm/quick.yaml
LM_CONFIG_cpu      := configs/lm/cpu.yaml
LM_CONFIG_gpu      := configs/lm/gpu.yaml
LM_CONFIG_paper    := configs/lm/paper.yaml
ALIGN_CONFIG_quick := configs/align/quick.yaml
ALIGN_CONFIG_cpu   := configs/align/cpu.yaml
ALIGN_CONFIG_gpu   := configs/align/cpu.yaml
ALIGN_CONFIG_paper := configs/align/cpu.yaml

CORPUS      := $(CORPUS_$(PROFILE))
DATA_DIR    := $(RUNS)/data/$(CORPUS)
MANIFEST    := $(DATA_DIR)/manifest.jsonl
CODEC_DIR   := $(RUNS)/codec/$(PROFILE)_12.5fps
BASE_DIR    := $(RUNS)/codec/$(PROFILE)_21.5fps
TOKENS_DIR  := $(RUNS)/tokens/$(PROFILE)_12.5fps
BTOKENS_DIR := $(RUNS)/tokens/$(PROFILE)_21.5fps
LM_DIR      := $(RUNS)/tts_lm/$(PROFILE)_12.5fps
BLM_DIR     := $(RUNS)/tts_lm/$(PROFILE)_21.5fps
ALIGN_DIR   := $(RUNS)/align/$(PROFILE)_12.5fps

ifeq ($(CODEC_CONFIG_$(PROFILE)),)
$(error unknown PROFILE=$(PROFILE); use quick, cpu, gpu or paper)
endif

.PHONY: help setup data codec codec-baseline tokenize tokenize-baseline lm lm-baseline app eval bench test lint clean-runs

help:
	@sed -n '1,12p' Makefile

setup: $(SETUP)
$(SETUP): pyproject.toml requirements.txt scripts/setup.sh
	bash scripts/setup.sh

# ---- corpus -------------------------------------------------------------------------------------------
# $(SETUP) is order-only (after |): reinstalling dependencies must not make the corpus, and so every model
# trained on it, look out of date.
data: $(MANIFEST)
$(MANIFEST): configs/data/$(CORPUS).yaml | $(SETUP)
	$(PY) -m data.corpus --profile $(CORPUS) --out $(DATA_DIR)

# ---- stage 1: codec (12.5 FPS, plus the 21.5 FPS baseline for the speed comparison) -----------------
# A codec folder that codec.train did not write (model.safetensors without train_config.yaml: NVIDIA's converted
# weights, a codec trained elsewhere, passed as CODEC_DIR=...) is used as it is: it gets no prerequisites, so a
# newer corpus or config never makes `make` train into it.
trained_here = $(if $(and $(wildcard $(1)/model.safetensors),$(if $(wildcard $(1)/train_config.yaml),,x)),,$(2))
codec: $(CODEC_DIR)/model.safetensors
$(CODEC_DIR)/model.safetensors: $(call trained_here,$(CODEC_DIR),$(MANIFEST) $(CODEC_CONFIG_$(PROFILE)))
	$(PY) -m codec.train $(CODEC_CONFIG_$(PROFILE)) data.manifest=$(MANIFEST) out_dir=$(CODEC_DIR)

codec-baseline: $(BASE_DIR)/model.safetensors
$(BASE_DIR)/model.safetensors: $(call trained_here,$(BASE_DIR),$(MANIFEST) $(BASE_CONFIG_$(PROFILE)))
	$(PY) -m codec.train $(BASE_CONFIG_$(PROFILE)) data.manifest=$(MANIFEST) out_dir=$(BASE_DIR)

# ---- stage 2: tokenize (TOKENIZE_ARGS="--workers 2" for more CPU processes) ------------------------------
# A retrained codec makes the tokens out of date: --replace-other-codec deletes the old codec's tokens and
# encodes anew (a token folder of the same codec resumes).
TOKENIZE_ARGS ?=
tokenize: $(TOKENS_DIR)/meta.json
$(TOKENS_DIR)/meta.json: $(CODEC_DIR)/model.safetensors $(MANIFEST)
	$(PY) -m data.tokenize_corpus --codec $(CODEC_DIR) --manifest $(MANIFEST) --out $(TOKENS_DIR) --replace-other-codec $(TOKENIZE_ARGS)

tokenize-baseline: $(BTOKENS_DIR)/meta.json
$(BTOKENS_DIR)/meta.json: $(BASE_DIR)/model.safetensors $(MANIFEST)
	$(PY) -m data.tokenize_corpus --codec $(BASE_DIR) --manifest $(MANIFEST) --out $(BTOKENS_DIR) --replace-other-codec $(TOKENIZE_ARGS)

# ---- stage 3: LM --------------------------------------------------------------------------------------
lm: $(LM_DIR)/model.safetensors
$(LM_DIR)/model.safetensors: $(TOKENS_DIR)/meta.json
	$(PY) -m tts_lm.train $(LM_CONFIG_$(PROFILE)) data.tokens=$(TOKENS_DIR) out_dir=$(LM_DIR) restart_on_new_tokens=true

lm-baseline: $(BLM_DIR)/model.safetensors
$(BLM_DIR)/model.safetensors: $(BTOKENS_DIR)/meta.json
	$(PY) -m tts_lm.train $(LM_CONFIG_$(PROFILE)) data.tokens=$(BTOKENS_DIR) out_dir=$(BLM_DIR) restart_on_new_tokens=true

# ---- stage 4: preference alignment (DPO on the LM's own samples, ranked by ASR CER + speaker similarity) ----
# ALIGN_ARGS="--workers 2" makes pairs on more CPU processes
ALIGN_ARGS ?=
ALIGN_SET  := $(ALIGN_CONFIG_$(PROFILE)) lm=$(LM_DIR) tokens=$(TOKENS_DIR) out_dir=$(ALIGN_DIR)
.PHONY: align
align: $(ALIGN_DIR)/eval/report.json
$(ALIGN_DIR)/pairs/meta.json: $(LM_DIR)/model.safetensors $(TOKENS_DIR)/meta.json $(ALIGN_CONFIG_$(PROFILE))
	$(PY) -m alignment pairs $(ALIGN_SET) $(ALIGN_ARGS)
$(ALIGN_DIR)/model.safetensors: $(ALIGN_DIR)/pairs/meta.json
	$(PY) -m alignment train $(ALIGN_SET)
$(ALIGN_DIR)/eval/report.json: $(ALIGN_DIR)/model.safetensors
	$(PY) -m alignment evaluate $(ALIGN_SET)

# ---- demo, evaluation, benchmarks ---------------------------------------------------------------------
app: $(SETUP)
	$(PY) -m apps.demo --lm $(LM_DIR) --codec $(CODEC_DIR) --examples $(MANIFEST)

# eval: the codec, plus the LM once `make lm` has trained it (EVAL_ARGS="--num 100 --asr faster-whisper:tiny.en" ...)
EVAL_ARGS ?=
eval: $(SETUP)
	$(PY) -m evaluation --codec $(CODEC_DIR) --lm $(LM_DIR) --manifest $(MANIFEST) --out $(RUNS)/eval/$(PROFILE) $(EVAL_ARGS)

# bench: random-init CPU-profile models, or the trained pairs once both `make lm` and `make lm-baseline` have run
# (same architecture at both frame rates). BENCH_ARGS="--threads 2", "--smoke", ...
BENCH_ARGS ?=
BENCH_MODELS = $(if $(and $(wildcard $(LM_DIR)/model.safetensors),$(wildcard $(BLM_DIR)/model.safetensors)),\
	--codec-12 $(CODEC_DIR) --lm-12 $(LM_DIR) --codec-21 $(BASE_DIR) --lm-21 $(BLM_DIR))
bench: $(SETUP)
	$(PY) -m evaluation.bench --out $(RUNS)/bench $(BENCH_MODELS) $(BENCH_ARGS)

# ---- checks -------------------------------------------------------------------------------------------
test: $(SETUP)
	$(PY) -m pytest -q -p no:cacheprovider tests

lint: $(SETUP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

clean-runs:
	rm -rf $(RUNS)
