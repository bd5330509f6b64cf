// The StableDiffusion module.
