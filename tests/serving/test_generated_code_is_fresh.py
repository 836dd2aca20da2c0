"""The committed code in serving/generated/ is exactly what proto/ generates, and the contract is documented.

Clients in other languages generate from proto/, Python code imports serving/generated/: if the two
drift apart, the Python server and client speak a different contract from everyone else.
"""

from __future__ import annotations

import re
import shutil
from importlib.metadata import version
from pathlib import Path

import pytest

from serving import proto_codegen


@pytest.fixture(scope="module")
def regenerated() -> dict[str, bytes]:
    return proto_codegen.render()


def test_committed_generated_code_matches_a_fresh_generation(regenerated: dict[str, bytes]) -> None:
    stale = proto_codegen.stale_files(regenerated, proto_codegen.OUTPUT_ROOT)
    tools = ", ".join(f"{name} {version(name)}" for name in ("grpcio-tools", "mypy-protobuf"))
    assert not stale, (
        "serving/generated/ is out of date with proto/; run `make proto` and commit the result "
        f"(generated here with {tools}; the committed files must come from the same versions):\n  "
        + "\n  ".join(stale)
    )


def test_generation_is_deterministic(regenerated: dict[str, bytes]) -> None:
    assert proto_codegen.render() == regenerated


def test_check_names_changed_missing_and_extra_files(regenerated: dict[str, bytes], tmp_path: Path) -> None:
    out = tmp_path / "generated"
    proto_codegen.write(regenerated, out)
    assert proto_codegen.stale_files(regenerated, out) == []
    (out / "persona/v1/types_pb2.py").write_text("# edited by hand\n")
    (out / "persona/v1/admin_service_pb2.pyi").unlink()
    (out / "persona/v1/removed_pb2.py").write_text("# left over from a deleted .proto\n")
    assert proto_codegen.stale_files(regenerated, out) == [
        "missing: persona/v1/admin_service_pb2.pyi",
        "changed: persona/v1/types_pb2.py",
        "extra:   persona/v1/removed_pb2.py",
    ]
    proto_codegen.write(regenerated, out)
    assert proto_codegen.stale_files(regenerated, out) == []
    assert not (out / "persona/v1/removed_pb2.py").exists()


def test_generated_modules_import_each_other_inside_the_serving_package(
    regenerated: dict[str, bytes],
) -> None:
    sources = {
        name: content.decode() for name, content in regenerated.items() if name.endswith((".py", ".pyi"))
    }
    assert (
        "from serving.generated.persona.v1 import types_pb2"
        in sources["persona/v1/personalization_service_pb2.py"]
    )
    for name, text in sources.items():
        assert "from persona." not in text and "import persona." not in text, name
    from serving.generated.persona.v1 import personalization_service_pb2

    # The wire contract keeps its proto names; only the Python location moved.
    assert personalization_service_pb2.DESCRIPTOR.name == "persona/v1/personalization_service.proto"
    assert (
        personalization_service_pb2.PersonalizeRequest.DESCRIPTOR.full_name == "persona.v1.PersonalizeRequest"
    )


def test_the_public_contract_is_fully_documented() -> None:
    assert proto_codegen.contract_problems(proto_codegen.read_contract()) == []


def test_undocumented_or_badly_named_elements_are_refused(tmp_path: Path) -> None:
    proto_dir = tmp_path / "acme" / "v1"
    proto_dir.mkdir(parents=True)
    (proto_dir / "shop.proto").write_text(
        """syntax = "proto3";
package acme.v1;
// A documented message.
message Basket {
  string id = 1;
  // Documented field.
  Colour colour = 2;
}
// Colours.
enum Colour {
  // Zero value with the wrong name.
  COLOUR_NONE = 0;
  RED = 1;
}
service Shop {
  // Documented method.
  rpc Get(Basket) returns (Basket);
}
"""
    )
    problems = proto_codegen.contract_problems(proto_codegen.read_contract(tmp_path))
    assert problems == [
        "field acme.v1.Basket.id has no comment",
        "enum acme.v1.Colour must start with COLOUR_UNSPECIFIED = 0",
        "enum value acme.v1.Colour.RED must start with COLOUR_",
        "enum value acme.v1.Colour.RED has no comment",
        "service acme.v1.Shop has no comment",
    ]
    with pytest.raises(proto_codegen.CodegenError, match=re.escape("field acme.v1.Basket.id has no comment")):
        proto_codegen.render(tmp_path)


def test_check_mode_exits_non_zero_and_writes_nothing_when_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "generated"
    shutil.copytree(proto_codegen.OUTPUT_ROOT, out, ignore=shutil.ignore_patterns("__pycache__"))
    (out / "persona/v1/types_pb2.py").write_text("# edited by hand\n")
    monkeypatch.setattr(proto_codegen, "OUTPUT_ROOT", out)
    assert proto_codegen.main(["--check"]) == 1
    assert "changed: persona/v1/types_pb2.py" in capsys.readouterr().err
    assert (out / "persona/v1/types_pb2.py").read_text() == "# edited by hand\n"
