"""The workbench's own GPU kernels (Triton), for the fast decode path (fastpath.py).

- `gemv_gptq4`: one row times a 4-bit GPTQ weight (AutoGPTQ's v1 packing, no act-order), for
  batch-1 decoding. Each int32 holds eight 4-bit codes along the input dimension; a code becomes
  a float without a conversion instruction (OR-ing it into the mantissa of 2^23 and subtracting
  2^23), the scale is applied once per group of rows rather than once per weight, and the zero
  point comes in as a precomputed zero x scale, so a weight costs a shift, a logical op, a
  subtract and a multiply-add.
- `dequantize_gptq4`: the whole fp16 weight from the same tensors, for prefills long enough
  that one dequantization and a dense GEMM beat a quantized GEMM.
- `decode_attention`: one query token per sequence against a KV cache, reading only the
  filled part: its length comes from a device tensor, so a captured CUDA graph replays it
  unchanged as the cache grows. Grouped-query heads that share a KV head are one program's rows;
  the cache is split along its length over several programs and combined after (flash decoding).

`gptq_reference`, `attention_reference` compute the same things in plain PyTorch: the
definitions the kernels are checked against (tests on the CPU, the benchmark on the GPU).
"""

from __future__ import annotations

import functools

MAGIC = 0x4B000000  # the float 2^23: a 4-bit code OR-ed into its mantissa reads as 2^23 + code
GEMV_CONFIGS = (  # (BLOCK_N output columns, BLOCK_R packed rows = 8 inputs each, warps, stages), autotuned per shape
    (32, 64, 4, 3), (16, 128, 4, 3), (64, 32, 4, 4), (32, 128, 8, 2),
)


def zero_times_scale(qzeros, scales, bits: int = 4):
    """[groups, N] fp16 zero x scale from v1 packed zeros (stored zero - 1), so that w = s*q - zs."""
    import torch

    shifts = torch.arange(0, 32, bits, dtype=torch.int32, device=qzeros.device)
    z = (qzeros.unsqueeze(2) >> shifts.view(1, 1, -1)) & ((1 << bits) - 1)  # [G, N/8, 8]
    z = z.reshape(qzeros.shape[0], -1) + 1  # [G, N]
    return (z.float() * scales.float()).to(torch.float16)


def gptq_reference(x, qweight, scales, zs, group_size: int):
    """x [M, K] @ W, W[k, n] = s[g, n] * q[k, n] - zs[g, n] with g = k // group_size; float32 math, x's dtype out."""
    import torch

    shifts = torch.arange(0, 32, 4, dtype=torch.int32, device=qweight.device)
    q = ((qweight.unsqueeze(1) >> shifts.view(1, -1, 1)) & 15).reshape(-1, qweight.shape[1]).float()  # [K, N]
    g = torch.arange(q.shape[0], device=q.device) // group_size
    w = scales.float()[g] * q - zs.float()[g]
    return (x.float() @ w).to(x.dtype)


def attention_reference(q, k, v, length: int, scale: float):
    """q [B, H, D] (one token), k/v [B, KV, S, D]; attends to the first `length` cache slots."""
    import torch

    b, heads, d = q.shape
    kv = k.shape[1]
    qg = q.float().view(b, kv, heads // kv, d)  # [B, KV, G, D]
    s = torch.einsum("bhgd,bhsd->bhgs", qg, k[:, :, :length].float()) * scale
    p = torch.softmax(s, dim=-1)
    return torch.einsum("bhgs,bhsd->bhgd", p, v[:, :, :length].float()).reshape(b, heads, d).to(q.dtype)


@functools.cache
def _kernels():
    """Compile-on-first-use: triton is imported only when a kernel runs (a GPU machine)."""
    import triton
    import triton.language as tl

    @triton.jit
    def gemv(x_ptr, qw_ptr, s_ptr, zs_ptr, out_ptr, K, N, GROUP: tl.constexpr, BLOCK_N: tl.constexpr,
             BLOCK_R: tl.constexpr):
        cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)  # [BN]
        cmask = cols < N
        rows_k = K // 8
        acc = tl.zeros((BLOCK_R, BLOCK_N), dtype=tl.float32)
        for r0 in range(0, rows_k, BLOCK_R):
            r = r0 + tl.arange(0, BLOCK_R)  # [BR] packed rows: inputs r*8 .. r*8+7
            rmask = r < rows_k
            m2 = rmask[:, None] & cmask[None, :]
            qw = tl.load(qw_ptr + r[:, None] * N + cols[None, :], mask=m2, other=0)  # [BR, BN] int32
            g = (r * 8) // GROUP
            s = tl.load(s_ptr + g[:, None] * N + cols[None, :], mask=m2, other=0.0).to(tl.float32)
            zs = tl.load(zs_ptr + g[:, None] * N + cols[None, :], mask=m2, other=0.0).to(tl.float32)
            p = tl.zeros((BLOCK_R, BLOCK_N), dtype=tl.float32)
            xr = tl.zeros((BLOCK_R,), dtype=tl.float32)
            for i in tl.static_range(8):
                xi = tl.load(x_ptr + r * 8 + i, mask=rmask, other=0.0).to(tl.float32)  # [BR]
                wi = (((qw >> (4 * i)) & 15) | 0x4B000000).to(tl.float32, bitcast=True) - 8388608.0
                p += xi[:, None] * wi
                xr += xi
            acc += s * p - zs * xr[:, None]  # the row's 8 inputs share a group: scale once per row
        tl.store(out_ptr + cols, tl.sum(acc, axis=0).to(tl.float16), mask=cmask)

    @triton.jit
    def dequant(qw_ptr, s_ptr, zs_ptr, w_ptr, K, N, GROUP: tl.constexpr, BLOCK_N: tl.constexpr,
                BLOCK_R: tl.constexpr):
        r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
        cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        m2 = (r < K // 8)[:, None] & (cols < N)[None, :]
        qw = tl.load(qw_ptr + r[:, None] * N + cols[None, :], mask=m2, other=0)
        g = (r * 8) // GROUP
        s = tl.load(s_ptr + g[:, None] * N + cols[None, :], mask=m2, other=0.0).to(tl.float32)
        zs = tl.load(zs_ptr + g[:, None] * N + cols[None, :], mask=m2, other=0.0).to(tl.float32)
        for i in tl.static_range(8):
            q = (((qw >> (4 * i)) & 15) | 0x4B000000).to(tl.float32, bitcast=True) - 8388608.0
            tl.store(w_ptr + (r[:, None] * 8 + i) * N + cols[None, :], (s * q - zs).to(tl.float16), mask=m2)

    @triton.jit
    def attn_partial(q_ptr, k_ptr, v_ptr, pos_ptr, acc_ptr, ml_ptr, stride_kb, stride_kh, stride_ks, scale,
                     HEADS: tl.constexpr, KV: tl.constexpr, G: tl.constexpr, GP: tl.constexpr, D: tl.constexpr,
                     BLOCK_S: tl.constexpr, SPLITS: tl.constexpr, POS_STRIDE: tl.constexpr):
        b, h, split = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        length = tl.load(pos_ptr + b * POS_STRIDE) + 1  # the slot written this step is the last one read
        chunk = tl.cdiv(length, SPLITS)
        start = split * chunk
        end = tl.minimum(start + chunk, length)
        rows = tl.arange(0, GP)  # query heads h*G .. h*G+G-1, padded to GP for tl.dot
        d = tl.arange(0, D)
        rmask = rows < G
        q = tl.load(q_ptr + (b * HEADS + h * G + rows)[:, None] * D + d[None, :], mask=rmask[:, None], other=0.0)
        m = tl.full((GP,), float("-inf"), dtype=tl.float32)
        total = tl.zeros((GP,), dtype=tl.float32)  # the softmax's running denominator
        acc = tl.zeros((GP, D), dtype=tl.float32)
        base = b * stride_kb + h * stride_kh
        for s0 in range(start, end, BLOCK_S):
            offs = s0 + tl.arange(0, BLOCK_S)
            smask = offs < end
            k = tl.load(k_ptr + base + offs[:, None] * stride_ks + d[None, :], mask=smask[:, None], other=0.0)
            v = tl.load(v_ptr + base + offs[:, None] * stride_ks + d[None, :], mask=smask[:, None], other=0.0)
            scores = tl.dot(q, tl.trans(k)) * scale  # [GP, BS]
            scores = tl.where(smask[None, :], scores, float("-inf"))
            m_new = tl.maximum(m, tl.max(scores, axis=1))
            p = tl.exp(scores - m_new[:, None])
            alpha = tl.exp(m - m_new)
            total = total * alpha + tl.sum(p, axis=1)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
            m = m_new
        out = ((b * KV + h) * SPLITS + split) * GP
        tl.store(acc_ptr + (out + rows)[:, None] * D + d[None, :], acc)
        tl.store(ml_ptr + (out + rows) * 2, m)
        tl.store(ml_ptr + (out + rows) * 2 + 1, total)

    @triton.jit
    def attn_combine(acc_ptr, ml_ptr, o_ptr, HEADS: tl.constexpr, KV: tl.constexpr, G: tl.constexpr,
                     GP: tl.constexpr, D: tl.constexpr, SPLITS: tl.constexpr):
        b, head = tl.program_id(0), tl.program_id(1)
        h, row = head // G, head % G
        sp = tl.arange(0, SPLITS)
        base = ((b * KV + h) * SPLITS + sp) * GP + row  # [SPLITS]
        m = tl.load(ml_ptr + base * 2)
        total = tl.load(ml_ptr + base * 2 + 1)
        top = tl.max(m, axis=0)
        w = tl.where(m == float("-inf"), 0.0, tl.exp(m - top))  # empty splits weigh nothing
        d = tl.arange(0, D)
        acc = tl.load(acc_ptr + base[:, None] * D + d[None, :])  # [SPLITS, D]
        out = tl.sum(acc * w[:, None], axis=0) / tl.sum(total * w, axis=0)
        tl.store(o_ptr + (b * HEADS + head) * D + d, out.to(tl.float16))

    tuned = triton.autotune(configs=[triton.Config({"BLOCK_N": n, "BLOCK_R": r}, num_warps=w, num_stages=s)
                                     for n, r, w, s in GEMV_CONFIGS], key=["K", "N"])(gemv)
    return tuned, dequant, attn_partial, attn_combine, gemv


def gemv_gptq4(x, qweight, scales, zs, group_size: int, out=None, config: tuple | None = None):
    """x [1, K] fp16 times the 4-bit weight: [1, N] fp16 (see the module's docstring). `config`
    (one of GEMV_CONFIGS) launches that configuration; None lets Triton's autotuner pick per shape
    (it times every configuration at a shape's first call, so warm up before capturing a graph)."""
    import torch

    kernels = _kernels()
    k, n = qweight.shape[0] * 8, qweight.shape[1]
    if x.shape != (1, k) or not x.is_contiguous():
        raise ValueError(f"gemv_gptq4 takes one contiguous row of {k} inputs; got {tuple(x.shape)}")
    out = torch.empty((1, n), dtype=torch.float16, device=x.device) if out is None else out
    if config is None:
        kernels[0][lambda meta: (-(-n // meta["BLOCK_N"]),)](x, qweight, scales, zs, out, k, n, GROUP=group_size)
    else:
        block_n, block_r, warps, stages = config
        kernels[4][(-(-n // block_n),)](x, qweight, scales, zs, out, k, n, GROUP=group_size, BLOCK_N=block_n,
                                        BLOCK_R=block_r, num_warps=warps, num_stages=stages)
    return out


def dequantize_gptq4(qweight, scales, zs, group_size: int, out=None):
    """The fp16 weight [K, N] (w = s*q - zs)."""
    import torch

    dequant = _kernels()[1]
    k, n = qweight.shape[0] * 8, qweight.shape[1]
    out = torch.empty((k, n), dtype=torch.float16, device=qweight.device) if out is None else out
    block_r, block_n = 16, 128
    dequant[(-(-(k // 8) // block_r), -(-n // block_n))](qweight, scales, zs, out, k, n, GROUP=group_size,
                                                          BLOCK_N=block_n, BLOCK_R=block_r)
    return out


class DecodeAttention:
    """Buffers and launches of `decode_attention` for one (batch, heads, head_dim) shape."""

    SPLITS = 16  # programs along the cache per (sequence, KV head): enough of them to fill the GPU at batch 1
    BLOCK_S = 64

    def __init__(self, batch: int, heads: int, kv_heads: int, head_dim: int, device):
        import torch

        self.b, self.heads, self.kv, self.d = batch, heads, kv_heads, head_dim
        self.g = heads // kv_heads
        self.gp = max(16, 1 << (self.g - 1).bit_length())  # tl.dot wants at least 16 rows
        self.acc = torch.empty((batch * kv_heads * self.SPLITS * self.gp, head_dim), dtype=torch.float32, device=device)
        self.ml = torch.empty((batch * kv_heads * self.SPLITS * self.gp, 2), dtype=torch.float32, device=device)

    def __call__(self, q, k_cache, v_cache, pos, scale: float, out):
        """q [B, H, D] fp16 contiguous, caches [B, KV, S, D] (last dim contiguous), pos int64: the slot
        this step wrote (length = pos + 1), one for all rows ([1]) or one per row ([B], the workload
        runner's slots). Writes out [B, H, D] fp16."""
        if pos.numel() not in (1, self.b) or not pos.is_contiguous():
            raise ValueError(f"pos must hold one position or one per row ({self.b}), contiguous: {tuple(pos.shape)}")
        _, _, partial, combine, _ = _kernels()
        partial[(self.b, self.kv, self.SPLITS)](
            q, k_cache, v_cache, pos, self.acc, self.ml, k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), scale,
            HEADS=self.heads, KV=self.kv, G=self.g, GP=self.gp, D=self.d, BLOCK_S=self.BLOCK_S, SPLITS=self.SPLITS,
            POS_STRIDE=0 if pos.numel() == 1 else 1)
        combine[(self.b, self.heads)](self.acc, self.ml, out, HEADS=self.heads, KV=self.kv, G=self.g, GP=self.gp,
                                      D=self.d, SPLITS=self.SPLITS)
        return out
