"""RIN backbone for MIRO: Recurrent Interface Network (Jabri et al. 2023) with conditioning cross-attention."""
