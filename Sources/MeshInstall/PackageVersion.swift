/// SwiftMesh's version: the tag `Scripts/build-images.sh` gives the images and `meshctl install` deploys by
/// default.
public enum PackageVersion {
  public static let current = "0.1.0"
}
