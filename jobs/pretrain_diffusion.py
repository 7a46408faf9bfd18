"""Pretrain a diffusion UNet (diffusers UNet2DModel + DDPMScheduler) on your own shards with Ray Train.

    python jobs/pretrain_diffusion.py experiment=diec_mnist          # MNIST test split, 2-core sized
    python jobs/pretrain_diffusion.py experiment=diec_mnist cluster.train.num_workers=4 cluster.use_gpu=true
Settings: `method.pretrain` of configs/method/diec.yaml (UNet config overrides, epochs, lr, EMA).
Writes <output_dir>/diec/pretrained/{unet,scheduler} (EMA weights, diffusers format): pass it to
DiEC as `method.unet=...`, or rerun jobs/train.py with the same output_dir and it is reused.
Checkpoints every epoch under <output_dir>/diec/pretrain; rerun the same command to resume.
"""
from raycluster.app.cli import hydra_job
from raycluster.app.pretrain import run_pretrain_diffusion

main = hydra_job(run_pretrain_diffusion)

if __name__ == "__main__":
    main()
