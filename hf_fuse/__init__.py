"""hf-fuse: train the transfer network on replay data and export one fused PEFT adapter."""
