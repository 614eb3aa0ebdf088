"""Train, validate or test a segmentation model from YAML configs (the same as ``zoo train``; LightningCLI).

    python train.py fit --config configs/quickstart.yaml
    python train.py fit --config configs/deeplabv3plus_xception65-os16_16x513_voc-aug.yaml --data.root DIR
    python train.py fit --config CONFIG --ckpt_path last        # resume the newest run of CONFIG in its own folder
    python train.py validate --config CONFIG --ckpt_path BEST.ckpt
    python train.py test --config CONFIG --ckpt_path BEST.ckpt --model.tta "{flip: true}"
    python train.py fit --config CONFIG --print_config                                         # resolved config

Mixed precision: ``--trainer.precision bf16-mixed`` (or ``16-mixed`` on GPUs). Several GPUs:
``--trainer.devices 4 --trainer.strategy ddp --trainer.sync_batchnorm true`` (``data.batch_size`` is per
process). Several nodes: add ``--trainer.num_nodes N`` and launch one process per GPU with ``torchrun``
(or ``srun`` under SLURM); Lightning detects the cluster from the environment (TorchElastic, SLURM).
"""

import sys

from zoo.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
