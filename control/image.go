package control

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// Image is a file read as an image.
type Image struct {
	Data      []byte
	MediaType string // "image/png", ...
}

// ViewImage reads an image file and names its media type by sniffing its
// bytes, then by its extension (control.md §1.7). An image larger than one
// transport message is fetched in chunks. An unrecognized format is an error.
func (s *Session) ViewImage(ctx context.Context, path string) (*Image, error) {
	data, err := s.ReadFile(ctx, path, 0)
	var ce *Error
	if errors.As(err, &ce) && ce.PayloadTooLarge {
		var buf bytes.Buffer
		_, err = s.ReadFileAll(ctx, path, &buf, nil)
		data = buf.Bytes()
	}
	if err != nil {
		return nil, err
	}
	mt := SniffImageType(data, path)
	if mt == "" {
		return nil, fmt.Errorf("selfhosted view_image: unsupported image format for %s", path)
	}
	return &Image{Data: data, MediaType: mt}, nil
}

var svgAfterXML = regexp.MustCompile(`^<\?xml[\s\S]*<svg`)

// SniffImageType returns the media type of an image, or "" when it is none of
// the supported formats. Order: PNG, JPEG, GIF, WEBP, BMP, TIFF magic bytes;
// then SVG text in the first 512 bytes; then the extension of name.
func SniffImageType(data []byte, name string) string {
	switch {
	case bytes.HasPrefix(data, []byte{0x89, 0x50, 0x4E, 0x47}):
		return "image/png"
	case bytes.HasPrefix(data, []byte{0xFF, 0xD8, 0xFF}):
		return "image/jpeg"
	case bytes.HasPrefix(data, []byte("GIF8")):
		return "image/gif"
	case len(data) >= 12 && string(data[0:4]) == "RIFF" && string(data[8:12]) == "WEBP":
		return "image/webp"
	case bytes.HasPrefix(data, []byte("BM")):
		return "image/bmp"
	case bytes.HasPrefix(data, []byte{0x49, 0x49, 0x2A, 0x00}), bytes.HasPrefix(data, []byte{0x4D, 0x4D, 0x00, 0x2A}):
		return "image/tiff"
	}
	head := data[:min(len(data), 512)]
	text := strings.ToLower(strings.TrimLeft(string(head), " \t\r\n\f\v\ufeff"))
	if strings.HasPrefix(text, "<svg") || svgAfterXML.MatchString(text) {
		return "image/svg+xml"
	}
	lower := strings.ToLower(name)
	ext := lower[strings.LastIndexByte(lower, '.')+1:]
	if !strings.Contains(lower, ".") {
		return ""
	}
	switch ext {
	case "png":
		return "image/png"
	case "jpg", "jpeg":
		return "image/jpeg"
	case "gif":
		return "image/gif"
	case "webp":
		return "image/webp"
	case "bmp":
		return "image/bmp"
	case "tif", "tiff":
		return "image/tiff"
	case "svg", "svgz":
		return "image/svg+xml"
	}
	return ""
}
