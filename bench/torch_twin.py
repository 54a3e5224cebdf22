"""PyTorch twin of dsv4's CUDA forward, written from shared/spec/model.md, for the benchmark
ratios of bench/results: the same synthetic V4-Flash-shaped model (the first `--layers` blocks
of Flash's pattern, random weights), the same decode points (batch x context, caches filled
with random values) and the same 8K prefill, timed with CUDA events, eager and torch.compile.

torch.compile is applied to the attention sub-layer; the MoE's per-expert loop stays eager.
HcHead is simplified to the mean of the streams (its cost is negligible).
Storage: dense projections in bf16 (PyTorch has no 128x128-block-scaled FP8 GEMM on Hopper),
routed experts as packed FP4 + E8M0 scales dequantized to bf16 per touched expert (as dsv4),
caches in bf16. Quantization simulation of kv / entries / indexer as the spec says.
"""
import argparse
import json
import math
import time

import torch
import torch.nn.functional as F

D, H, DH, R, Q, G, O, W = 4096, 64, 512, 64, 1024, 8, 1024, 128
HI, DI, K, NHC, E, TOPK, FF, V = 64, 128, 512, 4, 256, 6, 2048, 129280
EPS = 1e-6
dev = "cuda"
bf = torch.bfloat16


def ratios(layers):
    return [0 if l < 2 else (4 if l == 42 or l % 2 == 0 else 128) for l in range(layers)]


def rope_freqs(base, yarn):
    f = 1.0 / base ** (torch.arange(0, R, 2, dtype=torch.float32) / R)
    if yarn:
        factor, orig = 16.0, 65536
        corr = lambda r: R * math.log(orig / (r * 2 * math.pi)) / (2 * math.log(base))
        lo, hi = max(math.floor(corr(32)), 0), min(math.ceil(corr(1)), R - 1)
        ramp = ((torch.arange(R // 2, dtype=torch.float32) - lo) / (hi - lo)).clamp(0, 1)
        f = f / factor * ramp + f * (1 - ramp)
    return f.to(dev)


def rope(x, pos, freqs, inverse=False):  # x [..., R] pairs (2i, 2i+1); pos broadcastable to x[..., 0]
    ang = pos.float().unsqueeze(-1) * freqs
    c, s = ang.cos(), ang.sin()
    if inverse:
        s = -s
    re, im = x[..., 0::2].float(), x[..., 1::2].float()
    return torch.stack((re * c - im * s, re * s + im * c), -1).flatten(-2).to(x.dtype)


def block_quant(x, block, qmax, dtype, amin):
    shp = x.shape
    xb = x.float().reshape(*shp[:-1], -1, block)
    amax = xb.abs().amax(-1, keepdim=True).clamp_min(amin)
    s = torch.exp2(torch.ceil(torch.log2(amax / qmax)))
    q = (xb / s).clamp(-qmax, qmax)
    q = q.to(dtype).float() if dtype is not None else fp4_round(q)
    return (q * s).reshape(shp).to(x.dtype)


def fp4_round(q):
    grid = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0], device=q.device)
    idx = (q.abs().unsqueeze(-1) - grid).abs().argmin(-1)
    return grid[idx] * q.sign()


def fp8_sim(x, block=64):
    return block_quant(x, block, 448.0, torch.float8_e4m3fn, 1e-4)


def fp4_sim(x):
    return block_quant(x, 32, 6.0, None, 6 * 2.0 ** -126)


HAD = None


def hadamard(x):
    global HAD
    if HAD is None:
        h = torch.ones(1, 1)
        while h.shape[0] < DI:
            h = torch.cat((torch.cat((h, h), 1), torch.cat((h, -h), 1)), 0)
        HAD = (h / math.sqrt(DI)).to(dev, bf)
    return x @ HAD


def rms(x, w=None):
    y = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + EPS)
    return (y * w.float() if w is not None else y).to(x.dtype)


E2M1 = torch.tensor([0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6], device=dev)


def fp4_dequant(codes, scales):  # codes [rows, cols/2] uint8, scales [rows, cols/32] uint8
    v = torch.stack((E2M1[(codes & 15).long()], E2M1[(codes >> 4).long()]), -1).flatten(-2)
    s = torch.exp2(scales.float() - 127).repeat_interleave(32, -1)
    return (v * s).to(bf)


def rnd(*shape, std=1.0, dtype=bf):
    return (torch.randn(*shape, device=dev) * std).to(dtype)


class Layer:
    def __init__(self, m):
        self.m = m
        s = lambda i: 1 / math.sqrt(i)
        self.hc = [(rnd(24, NHC * D, std=0.01 * s(NHC * D), dtype=torch.float32), torch.zeros(24, device=dev),
                    torch.full((3,), 0.01, device=dev)) for _ in range(2)]
        self.wq_a, self.wq_b = rnd(Q, D, std=s(D)), rnd(H * DH, Q, std=s(Q))
        self.wkv, self.wo_a, self.wo_b = rnd(DH, D, std=s(D)), rnd(G * O, H * DH // G, std=s(4096)), rnd(D, G * O, std=s(G * O))
        self.sink = torch.zeros(H, device=dev)
        if m:
            c = 2 if m == 4 else 1
            self.cw, self.cg, self.ape = rnd(c * DH, D, std=s(D)), rnd(c * DH, D, std=s(D)), torch.zeros(m, c * DH, device=dev, dtype=bf)
        if m == 4:
            self.iwq, self.iwp = rnd(HI * DI, Q, std=s(Q)), rnd(HI, D, std=s(D))
            self.icw, self.icg, self.iape = rnd(2 * DI, D, std=s(D)), rnd(2 * DI, D, std=s(D)), torch.zeros(4, 2 * DI, device=dev, dtype=bf)
        self.gate, self.bias = rnd(E, D, std=s(D), dtype=torch.float32), torch.zeros(E, device=dev)
        self.codes = [torch.randint(0, 256, (E, r, c // 2), device=dev, dtype=torch.uint8) for r, c in ((FF, D), (D, FF), (FF, D))]
        self.scales = [torch.full((E, r, c // 32), 120, device=dev, dtype=torch.uint8) for r, c in ((FF, D), (D, FF), (FF, D))]
        self.sh = [rnd(FF, D, std=s(D)), rnd(D, FF, std=s(FF)), rnd(FF, D, std=s(D))]


def hc_pre(X, fn, base, scale):  # X [T, n, D] f32
    x = X.flatten(1)
    mix = (x @ fn.t()) * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS)
    n = NHC
    pre = torch.sigmoid(mix[:, :n] * scale[0] + base[:n]) + EPS
    post = 2 * torch.sigmoid(mix[:, n:2 * n] * scale[1] + base[n:2 * n])
    C = (mix[:, 2 * n:] * scale[2] + base[2 * n:]).view(-1, n, n).softmax(-1) + EPS
    C = C / (C.sum(1, keepdim=True) + EPS)
    for _ in range(19):
        C = C / (C.sum(2, keepdim=True) + EPS)
        C = C / (C.sum(1, keepdim=True) + EPS)
    return (pre.unsqueeze(-1) * X).sum(1), post, C


def moe(L, a):  # a [T, D] bf16
    p = torch.sqrt(F.softplus(a.float() @ L.gate.t()))
    _, ex = (p + L.bias).topk(TOPK, -1)
    w = p.gather(1, ex)
    w = (w / w.sum(-1, keepdim=True) * 1.5).to(bf)
    out = (F.silu((a @ L.sh[0].t()).clamp(max=10)) * (a @ L.sh[2].t()).clamp(-10, 10)) @ L.sh[1].t()
    flat = ex.flatten()
    order = flat.argsort(stable=True)
    counts = torch.bincount(flat, minlength=E).tolist()
    tok = order // TOPK
    start = 0
    ys = torch.empty(flat.numel(), D, device=dev, dtype=bf)
    for e, n in enumerate(counts):
        if n == 0:
            continue
        idx = order[start:start + n]
        x = a[tok[start:start + n]]
        w1, w2, w3 = (fp4_dequant(L.codes[i][e], L.scales[i][e]) for i in range(3))
        h = F.silu((x @ w1.t()).clamp(max=10)) * (x @ w3.t()).clamp(-10, 10) * w.flatten()[idx].unsqueeze(-1)
        ys[start:start + n] = h @ w2.t()
        start += n
    inv = torch.empty_like(order)
    inv[order] = torch.arange(order.numel(), device=dev)
    return out + ys[inv].view(-1, TOPK, D).sum(1)


class Cache:  # one layer's caches for a batch of B sequences at context C (bf16)
    def __init__(self, m, B, C):
        self.win = rnd(B, W, DH, std=0.5)
        self.ent = rnd(B, max(C // m, 1), DH, std=0.5) if m else None
        self.idx = rnd(B, C // 4, DI, std=0.5) if m == 4 else None


def attention(L, a, pos, cache, fr):
    # a [B, T, D]; pos [B, T]; decode (T = 1, caches at context pos) or prefill (T tokens from 0, B = 1)
    B, T, _ = a.shape
    qr = rms(a @ L.wq_a.t())
    q = rms((qr @ L.wq_b.t()).view(B, T, H, DH))
    q = torch.cat((q[..., :DH - R], rope(q[..., DH - R:], pos.unsqueeze(-1), fr)), -1)
    kv = rms(a @ L.wkv.t())
    kv = torch.cat((fp8_sim(kv[..., :DH - R]), rope(kv[..., DH - R:], pos, fr)), -1)
    m = L.m
    if T == 1:  # decode: the window from the cache ring, the entries from the caches
        keys = torch.cat((cache.win[:, 1:], kv), 1)  # [B, W, DH] (ring order is irrelevant to the sum)
        if m == 4:
            qi = (qr @ L.iwq.t()).view(B, T, HI, DI)
            qi = fp4_sim(hadamard(torch.cat((qi[..., :DI - R], rope(qi[..., DI - R:], pos.unsqueeze(-1), fr)), -1)))
            wi = (a @ L.iwp.t()) * (DI * HI) ** -0.5
            sc = torch.einsum("bhd,bcd->bhc", qi[:, 0], cache.idx).relu()
            sc = (sc * wi[:, 0].unsqueeze(-1)).sum(1)
            sel = sc.topk(min(K, sc.shape[-1]), -1).indices
            keys = torch.cat((keys, cache.ent.gather(1, sel.unsqueeze(-1).expand(-1, -1, DH))), 1)
        elif m:
            keys = torch.cat((keys, cache.ent), 1)
        s = torch.einsum("bhd,bsd->bhs", q[:, 0], keys).float() * DH ** -0.5
        s = torch.cat((s, L.sink.view(1, H, 1).expand(B, H, 1)), -1).softmax(-1)[..., :-1]
        o = torch.einsum("bhs,bsd->bhd", s.to(bf), keys).unsqueeze(1)
    else:  # prefill from position 0 (B = 1): masks over the window and the compressed entries
        kvs = kv[0]
        tpos = torch.arange(T, device=dev)
        keys, mask = kvs, (tpos[None] <= tpos[:, None]) & (tpos[None] > tpos[:, None] - W)
        if m:
            c = 2 if m == 4 else 1
            u = (a[0] @ L.cw.t()).view(T // m, m, c * DH)
            z = (a[0] @ L.cg.t()).view(T // m, m, c * DH) + L.ape
            if m == 4:
                up = torch.cat((torch.zeros_like(u[:1]), u[:-1]), 0)[..., :DH]
                zp = torch.cat((torch.full_like(z[:1], -1e30), z[:-1]), 0)[..., :DH]
                u, z = torch.cat((up, u[..., DH:]), 1), torch.cat((zp, z[..., DH:]), 1)
            ent = (z.float().softmax(1) * u.float()).sum(1).to(bf)
            ent = rms(ent)
            epos = torch.arange(T // m, device=dev) * m
            ent = torch.cat((fp8_sim(ent[:, :DH - R]), rope(ent[:, DH - R:], epos, fr)), -1)
            exists = (torch.arange(T // m, device=dev)[None] + 1) * m <= tpos[:, None] + 1
            if m == 4:
                iu = (a[0] @ L.icw.t()).view(T // 4, 4, 2 * DI)
                iz = (a[0] @ L.icg.t()).view(T // 4, 4, 2 * DI) + L.iape
                iup = torch.cat((torch.zeros_like(iu[:1]), iu[:-1]), 0)[..., :DI]
                izp = torch.cat((torch.full_like(iz[:1], -1e30), iz[:-1]), 0)[..., :DI]
                iu, iz = torch.cat((iup, iu[..., DI:]), 1), torch.cat((izp, iz[..., DI:]), 1)
                ie = rms((iz.float().softmax(1) * iu.float()).sum(1).to(bf))
                ie = fp4_sim(hadamard(torch.cat((ie[:, :DI - R], rope(ie[:, DI - R:], epos, fr)), -1)))
                qi = (qr[0] @ L.iwq.t()).view(T, HI, DI)
                qi = fp4_sim(hadamard(torch.cat((qi[..., :DI - R], rope(qi[..., DI - R:], tpos.unsqueeze(-1), fr)), -1)))
                wi = (a[0] @ L.iwp.t()) * (DI * HI) ** -0.5
                sc = torch.zeros(T, T // 4, device=dev)
                for h0 in range(0, HI, 8):
                    sc += (torch.einsum("thd,cd->thc", qi[:, h0:h0 + 8], ie).relu() * wi[:, h0:h0 + 8, None]).sum(1).float()
                sc = sc.masked_fill(~exists, -float("inf"))
                top = sc.topk(min(K, T // 4), -1).indices
                sel = torch.zeros(T, T // 4, dtype=torch.bool, device=dev).scatter_(1, top, True) & exists
            else:
                sel = exists
            keys, mask = torch.cat((kvs, ent), 0), torch.cat((mask, sel), 1)
        outs = []
        for t0 in range(0, T, 256):  # query chunks bound the score matrix
            s = torch.einsum("thd,sd->ths", q[0, t0:t0 + 256], keys).float() * DH ** -0.5
            s = s.masked_fill(~mask[t0:t0 + 256, None], -float("inf"))
            s = torch.cat((s, L.sink.view(1, H, 1).expand(s.shape[0], H, 1)), -1).softmax(-1)[..., :-1]
            outs.append(torch.einsum("ths,sd->thd", s.to(bf), keys))
        o = torch.cat(outs, 0).unsqueeze(0)
    o = torch.cat((o[..., :DH - R], rope(o[..., DH - R:], pos.unsqueeze(-1), fr, inverse=True)), -1)
    og = torch.einsum("btgi,goi->btgo", o.reshape(B, T, G, H * DH // G), L.wo_a.view(G, O, H * DH // G))
    return og.reshape(B, T, G * O) @ L.wo_b.t()


class Twin:
    def __init__(self, layers):
        self.layers = [Layer(m) for m in ratios(layers)]
        self.embed, self.head = rnd(V, D, std=1.0), rnd(V, D, std=D ** -0.5)
        self.fr = {0: rope_freqs(10000.0, False), 1: rope_freqs(160000.0, True)}
        self.attention = attention  # torch.compile replaces it (the MoE's per-expert loop stays eager)

    def forward(self, ids, pos, caches=None):  # ids, pos [B, T]
        B, T = ids.shape
        X = self.embed[ids].float().unsqueeze(2).expand(B, T, NHC, D).reshape(B * T, NHC, D).contiguous()
        for i, L in enumerate(self.layers):
            for sub in range(2):
                fn, base, scale = L.hc[sub]
                y, post, C = hc_pre(X, fn, base, scale)
                a = rms(y).to(bf)
                if sub == 0:
                    o = self.attention(L, a.view(B, T, D), pos, caches[i] if caches else None, self.fr[1 if L.m else 0]).view(B * T, D)
                else:
                    o = moe(L, a)
                X = post.unsqueeze(-1) * o.float().unsqueeze(1) + torch.einsum("tjk,tjd->tkd", C, X)
        y = rms((X.mean(1)).to(bf))
        return y @ self.head.t()


def timed(fn, reps):
    fn()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(reps):
        fn()
    b.record()
    torch.cuda.synchronize()
    return a.elapsed_time(b) / reps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=20)
    ap.add_argument("--batches", default="1,8,64")
    ap.add_argument("--contexts", default="4096,65536,1048576")
    ap.add_argument("--prefill", type=int, default=8192)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--compile", default="8:4096", help="B:C of the decode point run under torch.compile ('' = none)")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    torch.manual_seed(0)
    t0 = time.time()
    twin = Twin(args.layers)
    print(f"twin: {args.layers} layers, {torch.cuda.memory_allocated() / 2**30:.1f} GiB of weights, init {time.time() - t0:.1f} s", flush=True)
    res = {}
    with torch.no_grad():
        if args.prefill:
            ids = torch.randint(0, V, (1, args.prefill), device=dev)
            pos = torch.arange(args.prefill, device=dev).unsqueeze(0)
            ms = timed(lambda: twin.forward(ids, pos), 1)
            res["prefill_tokens_per_s"] = args.prefill / ms * 1e3
            print(f"twin eager prefill {args.prefill}: {ms:.0f} ms, {res['prefill_tokens_per_s']:.0f} tokens/s", flush=True)
        for C in map(int, args.contexts.split(",")):
            for B in map(int, args.batches.split(",")):
                need = sum(B * 2 * (W * DH + (C // max(L.m, 1) * DH if L.m else 0) + (C // 4 * DI if L.m == 4 else 0))
                           for L in twin.layers)
                free = torch.cuda.mem_get_info()[0]
                if need > 0.6 * free:
                    print(f"twin decode B={B} C={C}: skipped (caches {need / 2**30:.0f} GiB, {free / 2**30:.0f} GiB free)", flush=True)
                    continue
                caches = [Cache(L.m, B, C) for L in twin.layers]
                ids = torch.randint(0, V, (B, 1), device=dev)
                pos = torch.full((B, 1), C, device=dev)
                ms = timed(lambda: twin.forward(ids, pos, caches), args.steps)
                res[f"decode_tps_B{B}_C{C}"] = B / ms * 1e3
                print(f"twin eager decode B={B} C={C}: {ms:.1f} ms/step, {B / ms * 1e3:.0f} tokens/s", flush=True)
                if args.compile == f"{B}:{C}":
                    twin.attention = torch.compile(attention)
                    t1 = time.time()
                    twin.forward(ids, pos, caches)
                    torch.cuda.synchronize()
                    cms = timed(lambda: twin.forward(ids, pos, caches), args.steps)
                    twin.attention = attention
                    res[f"compiled_decode_tps_B{B}_C{C}"] = B / cms * 1e3
                    print(f"twin torch.compile decode B={B} C={C}: {cms:.1f} ms/step, {B / cms * 1e3:.0f} tokens/s "
                          f"(compile {time.time() - t1:.0f} s)", flush=True)
                del caches
                torch.cuda.empty_cache()
    if args.json:
        json.dump(res, open(args.json, "w"), indent=1)


if __name__ == "__main__":
    main()
