"""Training: datasets, planning, preprocessing (with its exact inverse), augmentation, recipes, the loop.

Data side, along the data flow::

    dataset.py      load_dataset(path) -> DatasetSpec; read_case(case, spec) (checked Volumes)
    fingerprint.py  compute_fingerprint(spec) -> Fingerprint (spacings, shapes, intensities, classes)
    planner.py      plan_dataset(spec) -> Plan (spacing, patch, network topology, batch, normalisation)
    plan.py         Plan, NetworkConfig, Normalization; Plan.save / Plan.load (readable JSON)
    preprocess.py   preprocess_case / preprocess_label / restore_labels / restore_argmax / restore_probabilities
    cache.py        build_cache(spec, plan, cache_dir) -> CaseCache (preprocessed .npy per case)
    augment.py      train_transforms(...) (MONAI transforms) and the foreground-oversampled sampler
    data.py         make_train_loader(...) (DataLoader workers), make_val_cases(...)
    recipe.py       load_recipe(path) -> Recipe (typed TOML recipes in pipelines/)

Heavy dependencies (torch, MONAI, nibabel) are imported by the modules that need them, not here.
"""
