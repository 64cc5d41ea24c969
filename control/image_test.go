package control

import "testing"

func TestSniffImageType(t *testing.T) {
	tests := []struct {
		name string
		data []byte
		path string
		want string
	}{
		{"png", []byte{0x89, 0x50, 0x4E, 0x47, 0x0D}, "x.jpg", "image/png"},
		{"jpeg", []byte{0xFF, 0xD8, 0xFF, 0xE0}, "x", "image/jpeg"},
		{"gif", []byte("GIF89a...."), "x", "image/gif"},
		{"webp", []byte("RIFF\x00\x00\x00\x00WEBPVP8 "), "x", "image/webp"},
		{"riff not webp", []byte("RIFF\x00\x00\x00\x00WAVEfmt "), "x", ""},
		{"bmp", []byte("BM\x00\x00"), "x", "image/bmp"},
		{"tiff le", []byte{0x49, 0x49, 0x2A, 0x00}, "x", "image/tiff"},
		{"tiff be", []byte{0x4D, 0x4D, 0x00, 0x2A}, "x", "image/tiff"},
		{"svg", []byte("  \n<SVG xmlns='http://www.w3.org/2000/svg'/>"), "x", "image/svg+xml"},
		{"xml svg", []byte("<?xml version=\"1.0\"?>\n<!-- c -->\n<svg/>"), "x", "image/svg+xml"},
		{"xml not svg", []byte("<?xml version=\"1.0\"?><html/>"), "x.txt", ""},
		{"ext png", []byte("??"), "/a/B.PNG", "image/png"},
		{"ext jpeg", nil, "a.jpeg", "image/jpeg"},
		{"ext jpg", nil, "a.jpg", "image/jpeg"},
		{"ext tif", nil, "a.tif", "image/tiff"},
		{"ext svgz", []byte{0x1f, 0x8b}, "a.svgz", "image/svg+xml"},
		{"ext webp", nil, "a.webp", "image/webp"},
		{"ext bmp", nil, "a.bmp", "image/bmp"},
		{"ext gif", nil, "a.gif", "image/gif"},
		{"unknown", []byte("hello"), "a.txt", ""},
		{"no ext", []byte("hello"), "png", ""},
	}
	for _, tc := range tests {
		if got := SniffImageType(tc.data, tc.path); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}
