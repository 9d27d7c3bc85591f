"""Data: the demo world, demo datasets in the LLaVA layout, the LLaVA-JSON loader and validation.

Import names from their modules: ``data.demo_pretrain`` / ``data.demo_instruct`` (the demo sets),
``data.llava_json`` (``LlavaJsonDataset``, ``read_records``), ``data.validate``
(``validate_dataset``), ``data.images`` (the one image loader). The package itself imports
nothing, so ``import llava_more.data.demo_world`` (the benchmark builder's) stays free of torch.
"""
