"""`eve-vlm bench`: runs the benchmarks that live in the bench/ folder of a source checkout."""
