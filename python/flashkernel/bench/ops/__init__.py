"""One benchmark module per op; each defines run(ctx, quick)."""
