"""The synthetic mini-VOC: per-class shapes (`shapes`), surfaces (`textures`), the class and scene
catalogue (`catalog`) and the renderer of one annotated picture (`scene`). The command that writes
a whole VOC tree is `retab.stages.synth_voc`."""
