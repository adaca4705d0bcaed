"""What the job and the launcher agree on, in one torch-free place: the job prints its result on one marked line
(a pipeline run as one job, a marked line before each stage) and rewrites a progress file the launcher names; a
Docker job sees its job directory at NeMo-Run's mount point."""

RESULT_MARK = "megatron_mnist result: "  # the job's last word (megatron_mnist.job.api.print_result)
STAGE_MARK = "megatron_mnist stage: "  # a one-job pipeline's log: the stage whose lines follow (api.in_one_process)
STAGE_ENV = "MEGATRON_MNIST_STAGE"  # that stage's name, which the progress file carries
PROGRESS_ENV = "MEGATRON_MNIST_PROGRESS"  # where the job writes progress.json (megatron_mnist.job.progress_file)
PROGRESS_FILE = "progress.json"
CONTAINER_JOB_DIR = "/nemo_run"  # NeMo-Run mounts the job directory here in a Docker container
