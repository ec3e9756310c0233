"""DVC stage embedding_store: the DeepEarth embeddings as fixed-stride memory maps + a DuckDB index.

python stages/embedding_store.py -> data/processed/embedding_store/ (see terrapipe.data.embedding_store);
dtype from params deepearth.store.dtype (float16 by default, float32 to store the source exactly).
"""
import _interpreter  # noqa: F401,I001 - first: re-runs this script with the project's Python if needed
from terrapipe import paths
from terrapipe.stage import run_stage


def main(args) -> None:
    from terrapipe.data.embedding_store import build_store, store_config

    build_store(paths.processed("deepearth"), paths.split_dir("deepearth") / "assignments.parquet",
                paths.EMBEDDING_STORE, dtype=store_config(args.params_obj).dtype)


if __name__ == "__main__":
    run_stage(main, __doc__)
