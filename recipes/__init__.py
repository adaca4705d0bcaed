"""NeMo-Run recipes: factories returning ``run.Partial``s of ``megatron_mnist.job.api.train`` / ``predict``.

from megatron_mnist_recipes.pretrain import pretrain
r = pretrain()
r.trainer.max_steps = 20
r.data.micro_batch_size = 32
run.run(r, executor=run.LocalExecutor())
"""
