"""The package's imports go one way: helpers -> VOC -> data / models -> algorithms -> engines ->
stages -> command line (issue 25). Read from the source with `ast`, function-level imports included."""
import ast
from pathlib import Path

import retab

PACKAGE = Path(retab.__file__).parent

# layer of each top-level module or subpackage of retab
LAYERS = {
    "misc": 0, "published": 0,
    "voc": 1, "score_format": 1, "synth": 1,
    # affinity: the pixel pairs, their labels and loss; the training items (data) build their pairs with it
    "data": 2, "models": 2, "affinity": 2,
    "cam": 3, "crf": 3, "boundary": 3, "random_walk": 3, "metrics": 3, "diagnostics": 3, "optim": 3,
    "engines": 4,
    "stages": 5,
    "cli": 6, "__main__": 6,
}


def unit(module: str) -> str | None:
    """`retab.engines.training` -> `engines`; the bare package -> None."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "retab" else None


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "retab":
            found.add(node.module)
            if node.module == "retab":  # from retab import voc
                found.update(f"retab.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "retab")
    return found


def module_units():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel == Path("__init__.py"):
            continue
        yield path, rel.parts[0].removesuffix(".py")


def test_every_module_has_a_layer():
    assert {u for _, u in module_units()} == set(LAYERS)


def test_imports_go_from_higher_to_lower_layers():
    wrong = []
    for path, own in module_units():
        for module in imports_of(path):
            target = unit(module)
            if target is not None and LAYERS[target] > LAYERS[own]:
                wrong.append(f"{path.relative_to(PACKAGE)} imports {module}")
    assert wrong == []


def test_only_stages_and_the_command_line_import_stages():
    wrong = [f"{path.relative_to(PACKAGE)} imports {module}" for path, own in module_units()
             if own not in ("stages", "cli", "__main__") for module in imports_of(path) if unit(module) == "stages"]
    assert wrong == []


def test_the_layer_check_sees_a_wrong_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from retab.stages.demo import main\n    from retab import engines\n")
    assert imports_of(bad) == {"retab.stages.demo", "retab", "retab.engines"}
