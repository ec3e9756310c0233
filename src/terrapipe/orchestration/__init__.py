"""What the Prefect flows in flows/ call: DVC decides what must be recomputed, Prefect when and where it runs.

dvc.py runs `dvc` commands one at a time with their log streamed into the run log and sorts failures into
transient (retried) and permanent (never retried); project.py reads the stage names and experiment keys
of the project being run; artifacts.py turns the pipeline's outputs into Prefect artifacts; tasks.py holds
the Prefect tasks; deployments.py checks flows/prefect.yaml; torchrun.py lets the pretrain stage run as
several ranks. Prefect is imported only inside functions or by tasks.py, which only flows import, so
`terrapipe --help` and the stages never pay for it.
"""
