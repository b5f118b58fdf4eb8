"""Qt-free, torch-free document model: images, label maps, schemas, undo, sector, deformation."""
