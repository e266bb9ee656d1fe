"""A decode loop with a static KV cache, optionally replayed as one CUDA graph per token.

transformers' `generate` rebuilds masks, grows the cache and launches every GPU op from Python at
each step; on a 34B model that host work, not the GPU, sets the pace (docs/h100-baseline.md). Here
the cache has a fixed length, the attention mask is a fixed-size buffer updated in place, and every
input of a step lives in a buffer of its own, so one step is the same GPU ops on the same
addresses each time: it can be captured once and replayed.

Modes: "eager" is transformers' own `generate` (eager.py runs it); "static" is this loop
without a graph (it runs anywhere, the CPU included, and is the reference the graph must equal);
"graph" captures the step in a CUDA graph. A graph that cannot be captured, or whose first replay
does not match the same step run eagerly, is not used: the loop goes on in "static" and says why.
"fast" is the workbench's own step (fast.py: fused GEMMs, its own cache and attention), driven by
the same loop. A model loaded with ExLlamaV2's own engine decodes with that engine's forward loop
(model/exllamav2_engine.py), also driven by this loop, and takes no other mode.

A decoder is anything with `prefill(input_ids, attention_mask)` and `step(token_ids)` returning
[B, V] float32 logits, plus `mode` (what ran), `note` (why, and what it cost) and `graph` (the
captured step or None); graphstep.CapturedStep gives `step` and the checked capture.
"""

from __future__ import annotations

import functools
import inspect
from contextlib import contextmanager
from dataclasses import dataclass

from ..errors import ConfigError, PromptError
from ..model.exllamav2_engine import is_runner
from .config import check_mode
from .fast import fast_decoder
from .graphstep import CapturedStep, graph_mismatch, tolerance  # noqa: F401  (tolerance, graph_mismatch: public here)
from .inputs import prefill_mask
from .sampling import logits_warpers

CACHE_LENGTH_STEP = 128  # cache lengths are rounded up to this, so nearby requests share a graph
GROUPED_SDPA = "workbench_grouped_sdpa"  # the attention the static loop uses in place of "sdpa"


def grouped_sdpa(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """SDPA for one new token under grouped-query attention, without copying the cache.

    transformers' SDPA path repeats every KV head for its 8 query heads when a mask is given:
    with a static cache that copies the whole cache 8-fold at each step. For a single query
    token the query heads that share a KV head can instead be that head's 8 query rows
    ([B, H, 1, D] -> [B, KV, H/KV, D]); the mask ([B, 1, 1, L]) applies to each row alike. Longer
    queries (the prefill) go to transformers' own SDPA."""
    import torch.nn.functional as F
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    b, heads, q_len, dim = query.shape
    kv_heads = key.shape[1]
    if q_len != 1 or heads == kv_heads or dropout:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                      **kwargs)
    q = query.reshape(b, kv_heads, heads // kv_heads, dim)  # [B, KV, G, D]: head h shares KV head h // G
    mask = attention_mask[:, :, :, : key.shape[-2]] if attention_mask is not None else None  # [B, 1, 1, L]
    out = F.scaled_dot_product_attention(q, key, value, attn_mask=mask, scale=scaling)  # [B, KV, G, D]
    return out.reshape(b, heads, 1, dim).transpose(1, 2).contiguous(), None  # [B, 1, H, D]


@functools.cache
def _register_grouped_sdpa() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(GROUPED_SDPA, grouped_sdpa)
    AttentionMaskInterface.register(GROUPED_SDPA, sdpa_mask)


@contextmanager
def grouped_attention(model):
    """While inside: a model set to "sdpa" attends with `grouped_sdpa` (others are left alone)."""
    config = model.config
    before = config._attn_implementation
    if before == "sdpa":
        _register_grouped_sdpa()
        config._attn_implementation = GROUPED_SDPA
    try:
        yield
    finally:
        config._attn_implementation = before


@dataclass(frozen=True)
class DecodeResult:
    """What a decode run produced, before it becomes records."""

    sequences: "object"  # [B, N] new token ids on the CPU (finished rows padded)
    logits: list  # N tensors [B, V], float32: the raw logits each token was chosen from
    token_marks: list[int]  # the clock mark at which each token existed
    prefill_mark: int  # the clock mark at the end of the prefill forward pass
    mode: str  # the mode that ran
    note: str  # why it differs from the one asked for, and what the graph cost; "" if nothing to say


def cache_length(prompt_width: int, max_new_tokens: int) -> int:
    """The static cache's length: prompt plus new tokens, rounded up to CACHE_LENGTH_STEP."""
    need = prompt_width + max_new_tokens
    return -(-need // CACHE_LENGTH_STEP) * CACHE_LENGTH_STEP


class StaticDecoder(CapturedStep):
    """One model's static cache, step buffers and (in graph mode) the captured step.

    Made once per (batch size, cache length, mode) and kept on the loaded model, so later
    generations reuse the cache and the graph. `prefill` fills the cache with a prompt batch;
    each `step` feeds one token per row and leaves that step's logits in `self.logits`.
    """

    def __init__(self, model, batch: int, length: int, graph: bool):
        import torch

        self.model, self.batch, self.length = model, batch, length
        self.device = model.get_input_embeddings().weight.device
        self.dtype = _activation_dtype(model)
        if graph and self.device.type != "cuda":
            raise ConfigError(f"decode_mode='graph' needs a CUDA device; the model is on {self.device}: use 'static'")
        self.graph_wanted = graph
        self.cache_arg, self.pass_cache_position = forward_args(model)
        self.cache = self._new_cache()
        self.min = torch.finfo(self.dtype).min
        d = self.device
        self.ids = torch.zeros((batch, 1), dtype=torch.long, device=d)  # [B, 1] this step's token
        self.pos = torch.zeros((batch, 1), dtype=torch.long, device=d)  # [B, 1] its rotary position
        self.cpos = torch.zeros(1, dtype=torch.long, device=d)  # [1] its slot in the cache
        self.mask = torch.full((batch, 1, 1, length), self.min, dtype=self.dtype, device=d)  # [B, 1, 1, L] additive
        self.logits = None  # [B, V] float32, allocated by the first step
        self.graph = None
        self.graph_note = ""  # what capturing the graph cost, or why there is none

    def _new_cache(self):
        from transformers import StaticCache

        return StaticCache(config=self.model.config, max_cache_len=self.length)

    @property
    def mode(self) -> str:
        return "graph" if self.graph is not None else "static"

    @property
    def note(self) -> str:
        return self.graph_note

    # --- one forward pass ---------------------------------------------------------------------

    def _forward(self, ids, pos, mask, cpos):
        kwargs = {self.cache_arg: self.cache, "use_cache": True, "logits_to_keep": 1}
        if self.pass_cache_position:
            kwargs["cache_position"] = cpos
        return self.model(input_ids=ids, position_ids=pos, attention_mask=mask, **kwargs).logits[:, -1]  # [B, V]

    def _step_body(self):
        """Everything one decode step does on the device, buffers in and out (what the graph holds)."""
        self.mask.index_fill_(-1, self.cpos, 0.0)  # the new token sees itself
        self.logits.copy_(self._forward(self.ids, self.pos, self.mask, self.cpos))
        self.pos.add_(1)
        self.cpos.add_(1)

    # --- the public steps ---------------------------------------------------------------------

    def prefill(self, input_ids, attention_mask):
        """Fill the cache with a left-padded batch ([B, T] ids and 0/1 mask); returns [B, V] float32
        logits of each row's last position."""
        import torch

        b, t = input_ids.shape
        if b != self.batch or t >= self.length:
            raise ConfigError(f"a batch of {b} x {t} does not fit this decoder ({self.batch} x {self.length})")
        self.cache.reset()  # in place: the graph's addresses stay valid
        valid = attention_mask.bool()  # [B, T]
        mask, pos = prefill_mask(attention_mask, self.length, self.dtype)  # [B, 1, T, L], [B, T]
        with grouped_attention(self.model):
            logits = self._forward(input_ids, pos, mask, torch.arange(t, device=self.device)).float()  # [B, V]
        self.mask.fill_(self.min)[:, 0, 0, :t].masked_fill_(valid, 0.0)
        self.pos.copy_(valid.long().sum(-1, keepdim=True))
        self.cpos.fill_(t)
        if self.logits is None:
            self.logits = torch.empty_like(logits)
        return logits

    def _step_context(self):
        return grouped_attention(self.model)

    def _state(self):
        tensors = [self.pos, self.cpos, self.mask]
        tensors += [layer.cumulative_length for layer in getattr(self.cache, "layers", [])
                    if hasattr(layer, "cumulative_length")]  # transformers 5.2x counts cached tokens itself
        return tensors


def forward_args(model) -> tuple[str, bool]:
    """The forward's name for the cache (renamed in transformers 5.2x) and whether it takes cache_position."""
    params = inspect.signature(model.forward).parameters
    return ("cache" if "cache" in params else "past_key_values"), "cache_position" in params


def _activation_dtype(model):
    import torch

    dtype = getattr(model, "dtype", None)
    return dtype if dtype in (torch.float16, torch.bfloat16, torch.float32) else torch.float32


def mode_problem(loaded, mode: str) -> str | None:
    """Why `mode` cannot run on this loaded model, or None (notebooks skip such modes and say why)."""
    check_mode(mode)
    if is_runner(loaded.model):
        return None if mode == "eager" else "kernel 'exllamav2-engine' decodes with ExLlamaV2's own loop only"
    if mode == "graph" and loaded.model.get_input_embeddings().weight.device.type != "cuda":
        return "a CUDA graph needs a CUDA device"
    return None


def decoder_for(loaded, batch: int, length: int, mode: str):
    """The loaded model's decoder for this shape and mode, made on first use. One is kept at a
    time: a new shape frees the previous cache before allocating its own. ExLlamaV2's engine
    brings its own decoder and takes only "eager", which means its own loop there."""
    if is_runner(loaded.model):
        if mode != "eager":
            raise ConfigError(f"decode_mode={mode!r}: kernel 'exllamav2-engine' decodes with ExLlamaV2's own loop "
                              "only; use 'eager' (the default), which runs that loop")
        return loaded.model.decoder(batch, length)
    key = (batch, length, mode)
    current = getattr(loaded, "decoder", None)
    if current is not None and current[0] == key:
        return current[1]
    release_decoder(loaded)  # before the new cache is allocated
    if mode == "fast":
        decoder = fast_decoder(loaded, batch, length)
    else:
        decoder = StaticDecoder(loaded.model, batch, length, graph=mode == "graph")
    loaded.decoder = (key, decoder)
    return decoder


def release_decoder(loaded) -> None:
    """Drop the decoder kept on `loaded` (a LoadedModel's own `release_decoder`)."""
    loaded.decoder = None


# --- the loop ---------------------------------------------------------------------------------

def logits_processors(config, tokenizer, prompt_width: int, device="cpu"):
    """transformers' processors for this config, in the order its `generate` applies them."""
    from transformers import LogitsProcessorList, MinNewTokensLengthLogitsProcessor, RepetitionPenaltyLogitsProcessor

    procs = LogitsProcessorList()
    if config.repetition_penalty != 1.0:
        procs.append(RepetitionPenaltyLogitsProcessor(penalty=config.repetition_penalty))
    if config.min_new_tokens > 0:
        procs.append(MinNewTokensLengthLogitsProcessor(prompt_width, config.min_new_tokens, tokenizer.eos_token_id,
                                                       device=device))
    procs.extend(logits_warpers(config))
    return procs


def static_generate(loaded, input_ids, attention_mask, config, clock, mode: str, streamer=None,
                    stop_check=None, cache_new_tokens: int | None = None, keep_logits: bool = True) -> DecodeResult:
    """Greedy or sampled decoding of a left-padded batch through a `StaticDecoder`.

    `clock` gets a mark at the end of the prefill and one when each token exists. The host
    reads the new tokens once per step (to stop at eos, as transformers does), which is also
    when `streamer` and `stop_check(new_ids)` see them. `cache_new_tokens` sizes the cache for
    more tokens than this call makes (warm-up runs share the main run's cache and graph).
    `keep_logits=False` keeps no per-step logits (`DecodeResult.logits` is then empty)."""
    import torch

    if config.num_beams > 1:
        raise ConfigError(f"num_beams={config.num_beams}: beam search runs only with decode_mode='eager'")
    tok = loaded.tokenizer
    b, t = input_ids.shape
    need = t + max(config.max_new_tokens, cache_new_tokens or 0)
    positions = getattr(loaded.model.config, "max_position_embeddings", None)
    if isinstance(positions, int) and need > positions:  # before a cache of that length is allocated
        raise PromptError(f"a static cache for {t} prompt tokens and {need - t} new ones needs {need} positions; "
                          f"the model has {positions}: ask for at least {need - positions} fewer tokens")
    decoder = decoder_for(loaded, b, cache_length(t, need - t), mode)
    reused = decoder.graph is not None
    procs = logits_processors(config, tok, t, input_ids.device)
    all_ids = torch.full((b, t + config.max_new_tokens), tok.pad_token_id, dtype=torch.long, device=input_ids.device)
    all_ids[:, :t] = input_ids  # [B, T + N]
    unfinished = torch.ones(b, dtype=torch.bool, device=input_ids.device)
    eos, pad = tok.eos_token_id, tok.pad_token_id
    logits_seen, marks = [], []
    if streamer is not None:
        streamer.put(input_ids.cpu())
    with torch.inference_mode():
        logits = decoder.prefill(input_ids, attention_mask)
        prefill_mark = clock.mark()
        for i in range(config.max_new_tokens):
            if keep_logits:
                logits_seen.append(logits.clone())
            scores = procs(all_ids[:, : t + i], logits)
            if config.do_sample:
                nxt = torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1).squeeze(1)
            else:
                nxt = scores.argmax(-1)  # [B]
            nxt = torch.where(unfinished, nxt, torch.full_like(nxt, pad))
            all_ids[:, t + i] = nxt
            unfinished &= nxt != eos
            marks.append(clock.mark())
            if streamer is not None:
                streamer.put(nxt.cpu())
            done = not bool(unfinished.any())  # the step's one synchronization, as in transformers
            if done or i + 1 == config.max_new_tokens or (stop_check and stop_check(all_ids[:, t: t + i + 1])):
                break
            logits = decoder.step(nxt)
    if streamer is not None:
        streamer.end()  # as transformers' generate does: a TextIteratorStreamer's reader stops here
    ran = decoder.mode
    note = "graph reused from an earlier call" if reused else decoder.note
    return DecodeResult(sequences=all_ids[:, t: t + len(marks)].cpu(), logits=logits_seen, token_marks=marks,
                        prefill_mark=prefill_mark, mode=ran, note=note)
