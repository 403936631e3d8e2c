"""Every technique's pass fits one protocol; the pipeline orders them."""
import maskfx
from maskfx.technique import Technique as TechniquePass
from maskfx.techniques import PIPELINE


def test_every_pass_fits_the_protocol_and_names_its_config():
    configs = {"channels": "ChannelConfig", "gateconnect": "GateConnectConfig", "maskconnect": "MaskConnectConfig",
               "blockout": "BlockoutConfig", "jumpout": "JumpoutConfig"}
    assert [p.TECHNIQUE for p in PIPELINE] == list(configs)
    for technique in PIPELINE:
        assert isinstance(technique, TechniquePass)
        assert technique.CONFIG.__name__ == configs[technique.TECHNIQUE]
        assert getattr(maskfx, technique.CONFIG.__name__) is technique.CONFIG  # public
