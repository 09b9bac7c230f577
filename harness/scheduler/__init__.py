"""Slurm: batch scripts from slurm/*.sbatch, submission, status and collection."""
