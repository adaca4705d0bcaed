"""The launcher imports NeMo-Run without torch and the Lepton client (``megatron_mnist.lean_nemo_run``).

Each case needs a fresh interpreter (what is imported is the point), so each runs a small program in a subprocess.
These tests pin what the module relies on in NeMo-Run: they fail when NeMo-Run's layout changes under it.
"""

import json
import subprocess
import sys
from importlib.metadata import version

DTYPE_RECIPE = """
import nemo_run as run
import torch
from nemo_run.core.serialization.yaml import YamlSerializer
print(YamlSerializer().serialize(run.Config(dict, dtype=torch.bfloat16, lr=0.1)))
"""


def python(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_pinned_to_the_nemo_run_it_was_written_for():
    # the placeholder module and the torch guard are NeMo-Run 0.11's layout; a new version must be re-checked
    assert version("nemo_run").startswith("0.11."), version("nemo_run")


def test_nemo_run_imports_without_torch_leptonai_networkx_or_the_ssh_stack():
    out = python(
        "import sys\n"
        "from megatron_mnist.lean_nemo_run import import_nemo_run\n"
        "run = import_nemo_run()\n"
        "import json\n"
        "print(json.dumps({m: type(sys.modules[m]).__name__ if m in sys.modules else None\n"
        "    for m in ('torch', 'leptonai', 'nemo_run', 'networkx', 'paramiko', 'fabric', 'cryptography')}))\n"
    )
    loaded = json.loads(out)
    assert loaded["nemo_run"] == "module"
    assert loaded["torch"] is None and loaded["leptonai"] is None
    assert loaded["networkx"] == loaded["paramiko"] == "_LoadedOnFirstUse"  # their code runs on first use
    assert loaded["fabric"] is None and loaded["cryptography"] is None


def test_the_tunnel_client_gets_the_real_ssh_stack_on_first_use():
    # what NeMo-Run's SSHTunnel.connect touches: fabric's Config and Connection, paramiko's exception classes
    out = python(
        "from megatron_mnist.lean_nemo_run import import_nemo_run\n"
        "import_nemo_run()\n"
        "from nemo_run.core.tunnel import client\n"
        "connection = client.Connection('localhost', user='nobody', config=client.Config())\n"
        "import fabric, paramiko\n"
        "print(type(connection) is fabric.Connection, type(paramiko).__name__,\n"
        "      client.paramiko.ssh_exception.SSHException is paramiko.SSHException,\n"
        "      issubclass(paramiko.ssh_exception.BadAuthenticationType, paramiko.AuthenticationException))\n"
    )
    assert out.split() == ["True", "module", "True", "True"]


def test_a_torch_dtype_serialises_as_nemo_run_writes_it():
    lean = python("from megatron_mnist.lean_nemo_run import import_nemo_run\nimport_nemo_run()\n" + DTYPE_RECIPE)
    plain = python(DTYPE_RECIPE)
    assert "torch.bfloat16" in plain
    assert lean == plain


def test_the_experiment_graph_still_orders_jobs_through_lazy_networkx():
    out = python(
        "from megatron_mnist.lean_nemo_run import import_nemo_run\n"
        "import_nemo_run()\n"
        "import networkx as nx\n"
        "g = nx.DiGraph([('pretrain', 'finetune'), ('finetune', 'predict')])\n"
        "print(list(nx.topological_sort(g)))\n"
    )
    assert out.strip() == "['pretrain', 'finetune', 'predict']"


def test_the_launcher_refuses_lepton_clearly_and_a_plain_import_keeps_it():
    out = python(
        "from megatron_mnist.lean_nemo_run import import_nemo_run\n"
        "run = import_nemo_run()\n"
        "try:\n    run.LeptonExecutor()\nexcept RuntimeError as e:\n    print(e)\n"
    )
    assert "not available in megatron-mnist's launcher" in out
    real = python("import megatron_mnist\nimport nemo_run\nprint(nemo_run.LeptonExecutor.__module__)")
    assert real.strip() == "nemo_run.core.execution.lepton"
    assert "leptonai" in python(
        "import megatron_mnist, nemo_run, sys\nprint([m for m in sys.modules if m == 'leptonai'])"
    )


def test_when_torch_is_already_imported_nothing_is_held_back():
    out = python(
        "import torch\n"
        "from megatron_mnist.lean_nemo_run import import_nemo_run\n"
        "import_nemo_run()\n"
        "import yaml, torch\n"
        "print(torch.dtype in yaml.SafeDumper.yaml_representers)\n"
    )
    assert out.strip() == "True"
