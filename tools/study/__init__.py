"""How sure a choice is: the seed study and the ablation."""
