"""The release pipeline: matrix -> build twice -> compare -> sign -> SBOM/provenance -> publish."""
