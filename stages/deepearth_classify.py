"""DVC stage deepearth_classify: the DeepEarth species classifiers (language, vision) and the cross-modal
masked autoencoder, trained on the embedding store -> models/deepearth/.

python stages/deepearth_classify.py; params deepearth.classifier / deepearth.autoencoder. Writes language.pt,
vision.pt, autoencoder.pt (one dict each), metrics.json (per split reason, baselines, unseen species,
zero-shot), curves.csv and autoencoder_curves.csv (per epoch); see terrapipe.train.deepearth.
"""
import _interpreter  # noqa: F401,I001 - first: re-runs this script with the project's Python if needed
from terrapipe import paths
from terrapipe.stage import run_stage


def main(args) -> None:
    from terrapipe.train.deepearth import deepearth_params, run_deepearth

    run_deepearth(deepearth_params(args.params_obj), paths.EMBEDDING_STORE, paths.DEEPEARTH)


if __name__ == "__main__":
    run_stage(main, __doc__)
