"""Data preparation and training, installed as `spectrodiff.training` (inference lives in the rest of the package):
the reference catalogue written as MIDI (`catalogue`: its music `composition`, its sound `rendering`), real
recordings for the vocoders (`recordings`), datasets of tiles and captions (`prepare`), UNet and VAE training
(`train`), the vocoder's (`vocoder`), the decoder fine-tune (`decoder`), and bundling a trained model into the
package (`bundle`)."""
