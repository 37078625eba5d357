"""Phase 2 of DiffATR: the noise schedule, DDIM, the attention denoiser, its loss and sampler."""

from diffatr.diffusion.denoiser import CandidateCache, Denoiser, QueryCache, timestep_embedding
from diffatr.diffusion.losses import generation_loss
from diffatr.diffusion.sampling import Trajectory, ddim_sample
from diffatr.diffusion.noise_schedule import SCHEDULES, alphas_cumprod_from_betas, make_betas
from diffatr.diffusion.ddim import DDIMScheduler, DDIMStepOutput

__all__ = [
    "SCHEDULES",
    "CandidateCache",
    "DDIMScheduler",
    "DDIMStepOutput",
    "Denoiser",
    "QueryCache",
    "Trajectory",
    "alphas_cumprod_from_betas",
    "ddim_sample",
    "generation_loss",
    "make_betas",
    "timestep_embedding",
]
