# Package marker: networks, dataset, augmentation, loss and training loop.
