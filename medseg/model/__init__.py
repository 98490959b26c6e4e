"""The trained-model contract, shared by training and inference (neither owns it).

    plan.py        Plan, Normalization (+ NetworkConfig from medseg.networks); readable plan.json
    preprocess.py  preprocess_case / preprocess_label and their exact inverse (restore_*)
    folder.py      ModelSpec (model.json, the one description of a trained model), the model
                   folder (save / read / load: JSON + safetensors, never a pickle) and the hook
                   from a spec to the network registry (build_inference_network)
    runtime.py     Runtime: device, precision and CPU threads resolved by one rule set

Training writes model folders with these pieces, inference reads them; inference never imports
:mod:`medseg.training` (an import contract checked in CI, see docs/architecture.md).
"""
