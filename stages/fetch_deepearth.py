"""DVC stage fetch_deepearth: DeepEarth central-Florida observations -> data/raw/deepearth/ (HF parquet layout)."""
from terrapipe.stage import run_fetch_stage

if __name__ == "__main__":
    run_fetch_stage("deepearth", __doc__)
