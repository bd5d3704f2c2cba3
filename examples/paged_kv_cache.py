"""flashkernel.PagedKVCache + paged_decode_attention next to SDPA over contiguous K/V.

Fills a paged cache with --batch sequences of --ctx tokens, then runs one decode step (one query
token per sequence) straight from the pages, and compares it with torch SDPA on the same K/V held
contiguously (what a cache without paging would hand it).
"""
import argparse

import torch
import torch.nn.functional as F

from _common import add_common_args, compare, require_gpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16, help="sequences (default: %(default)s)")
    parser.add_argument("--ctx", type=int, default=4096, help="tokens already cached per sequence (default: %(default)s)")
    parser.add_argument("--heads", type=int, default=32, help="query heads (default: %(default)s)")
    parser.add_argument("--kv-heads", type=int, default=8, help="K/V heads, dividing --heads (default: %(default)s)")
    parser.add_argument("--head-dim", type=int, choices=(64, 128), default=128)
    parser.add_argument("--page-size", type=int, default=16, help="tokens per page, a power of two in [8, 256]")
    add_common_args(parser)
    args = parser.parse_args()
    fk = require_gpu(parser.prog)

    dtype, B, T, Hkv, d = getattr(torch, args.dtype), args.batch, args.ctx, args.kv_heads, args.head_dim
    pages = B * -(-T // args.page_size)
    cache = fk.PagedKVCache(num_layers=1, num_pages=pages, num_kv_heads=Hkv, head_dim=d, page_size=args.page_size,
                            dtype=dtype)
    seq_ids = [cache.add_sequence() for _ in range(B)]
    k = torch.randn(B * T, Hkv, d, device="cuda", dtype=dtype)  # the tokens of seq_ids[0] first
    v = torch.randn_like(k)
    cache.append(0, seq_ids, k, v, num_tokens=[T] * B)  # layer 0, a prefill of T tokens each
    stats = cache.memory_stats()
    print(f"cache: {stats['pages_used']}/{stats['pages_total']} pages of {args.page_size} tokens, "
          f"{stats['bytes_used'] / 2**20:.1f} MiB")

    k_c = k.view(B, T, Hkv, d).transpose(1, 2).contiguous()  # [B, Hkv, T, d]
    v_c = v.view(B, T, Hkv, d).transpose(1, 2).contiguous()
    k0, _ = fk.kv_cache_gather(cache, 0, seq_ids[0])
    print(f"gather of sequence 0 equals what was appended: {torch.equal(k0, k_c[0])}")

    q = torch.randn(B, args.heads, d, device="cuda", dtype=dtype)  # one new token per sequence
    print(f"paged decode B={B} ctx={T} H={args.heads} H_kv={Hkv} d={d} {args.dtype}")
    compare(lambda: fk.paged_decode_attention(q, cache, 0, seq_ids),
            lambda: F.scaled_dot_product_attention(q[:, :, None], k_c, v_c, enable_gqa=Hkv != args.heads)[:, :, 0],
            args.iters, torch_name="SDPA")


if __name__ == "__main__":
    main()
