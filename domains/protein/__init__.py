"""Protein domain: sequences and UniProt/Swiss-Prot annotations, antibody IMGT regions,
homology-aware splits, and the protein case studies' runners."""
